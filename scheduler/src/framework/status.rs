//! `Status`: what a plugin answers, with kube-scheduler's codes and reasons.

use std::borrow::Cow;
use std::fmt;

/// The outcome class of a plugin call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    /// The plugin ran and is satisfied.
    Success,
    /// An internal error; the pod is retried with backoff.
    Error,
    /// The pod does not fit now; preemption may help.
    Unschedulable,
    /// The pod does not fit and preemption cannot help on this node.
    UnschedulableAndUnresolvable,
    /// Permit: the pod waits for approval.
    Wait,
    /// The plugin has nothing to do for this pod (PreFilter/PreScore: skip its Filter/Score; Bind: next binder).
    Skip,
    /// The pod waits for something outside the scheduler (an external component); no preemption.
    Pending,
}

/// A plugin's answer: a code, human-readable reasons, and the plugin that gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    code: Code,
    /// Borrowed for the common fixed reasons (no allocation per failed node), owned otherwise.
    reasons: Cow<'static, [Cow<'static, str>]>,
    plugin: Option<Cow<'static, str>>,
}

impl Default for Status {
    fn default() -> Self {
        Self::success()
    }
}

impl Status {
    /// Success.
    pub const fn success() -> Self {
        Self { code: Code::Success, reasons: Cow::Borrowed(&[]), plugin: None }
    }

    /// A status with a code and one reason.
    pub fn new(code: Code, reason: impl Into<Cow<'static, str>>) -> Self {
        Self { code, reasons: Cow::Owned(vec![reason.into()]), plugin: None }
    }

    /// A status with fixed reasons, built without allocating (for reasons given per node in scans).
    pub const fn fixed(code: Code, reasons: &'static [Cow<'static, str>]) -> Self {
        Self { code, reasons: Cow::Borrowed(reasons), plugin: None }
    }

    /// `Unschedulable` with a reason.
    pub fn unschedulable(reason: impl Into<Cow<'static, str>>) -> Self {
        Self::new(Code::Unschedulable, reason)
    }

    /// `UnschedulableAndUnresolvable` with a reason.
    pub fn unresolvable(reason: impl Into<Cow<'static, str>>) -> Self {
        Self::new(Code::UnschedulableAndUnresolvable, reason)
    }

    /// `Error` with a message.
    pub fn error(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(Code::Error, message)
    }

    /// `Skip`.
    pub const fn skip() -> Self {
        Self { code: Code::Skip, reasons: Cow::Borrowed(&[]), plugin: None }
    }

    /// `Wait`.
    pub const fn wait() -> Self {
        Self { code: Code::Wait, reasons: Cow::Borrowed(&[]), plugin: None }
    }

    /// Adds a reason.
    #[must_use]
    pub fn with_reason(mut self, reason: impl Into<Cow<'static, str>>) -> Self {
        self.reasons.to_mut().push(reason.into());
        self
    }

    /// Records the plugin that answered (the framework does this for you).
    #[must_use]
    pub fn with_plugin(mut self, plugin: impl Into<Cow<'static, str>>) -> Self {
        if self.plugin.is_none() {
            self.plugin = Some(plugin.into());
        }
        self
    }

    /// The code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The reasons.
    pub fn reasons(&self) -> &[Cow<'static, str>] {
        &self.reasons
    }

    /// The plugin that answered.
    pub fn plugin(&self) -> Option<&str> {
        self.plugin.as_deref()
    }

    /// True for `Success`.
    pub fn is_success(&self) -> bool {
        self.code == Code::Success
    }

    /// True for `Skip`.
    pub fn is_skip(&self) -> bool {
        self.code == Code::Skip
    }

    /// True for the two unschedulable codes and `Pending`.
    pub fn is_rejected(&self) -> bool {
        matches!(self.code, Code::Unschedulable | Code::UnschedulableAndUnresolvable | Code::Pending)
    }

    /// The reasons joined by `, `.
    pub fn message(&self) -> String {
        self.reasons.join(", ")
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message())
    }
}
