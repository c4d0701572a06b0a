//! The one error type of the bosun API: each variant is a Kubernetes `Status` reason with its code.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ListMeta, Status, StatusCause, StatusDetails};

/// `Result` with bosun's API [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a failed API call says, beyond its reason: the message and the details a `Status` carries.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ErrorBody {
    /// Human-readable description, as in `Status.message`.
    pub message: String,
    /// The object the error is about and field causes, as in `Status.details`.
    pub details: Option<StatusDetails>,
}

impl ErrorBody {
    /// A body with only a message.
    pub fn new(message: impl Into<String>) -> Box<Self> {
        Box::new(Self { message: message.into(), details: None })
    }

    /// A body naming the object (`kind` is the resource's plural or kind, as Kubernetes does).
    pub fn about(message: impl Into<String>, group: &str, kind: &str, name: &str) -> Box<Self> {
        Box::new(Self {
            message: message.into(),
            details: Some(StatusDetails {
                group: (!group.is_empty()).then(|| group.to_owned()),
                kind: (!kind.is_empty()).then(|| kind.to_owned()),
                name: (!name.is_empty()).then(|| name.to_owned()),
                ..StatusDetails::default()
            }),
        })
    }
}

/// An API error. Each variant maps one-to-one onto a Kubernetes `Status` reason and HTTP code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// 400 `BadRequest`: the request itself is malformed.
    #[error("{}", .0.message)]
    BadRequest(Box<ErrorBody>),
    /// 401 `Unauthorized`: no valid credentials.
    #[error("{}", .0.message)]
    Unauthorized(Box<ErrorBody>),
    /// 403 `Forbidden`: the caller may not do this (also: writes into a terminating namespace).
    #[error("{}", .0.message)]
    Forbidden(Box<ErrorBody>),
    /// 404 `NotFound`: the object or resource does not exist.
    #[error("{}", .0.message)]
    NotFound(Box<ErrorBody>),
    /// 405 `MethodNotAllowed`: the resource does not support this verb.
    #[error("{}", .0.message)]
    MethodNotAllowed(Box<ErrorBody>),
    /// 406 `NotAcceptable`: none of the requested content types can be produced.
    #[error("{}", .0.message)]
    NotAcceptable(Box<ErrorBody>),
    /// 409 `AlreadyExists`: create of a name that is taken.
    #[error("{}", .0.message)]
    AlreadyExists(Box<ErrorBody>),
    /// 409 `Conflict`: stale resourceVersion, or a server-side apply field conflict.
    #[error("{}", .0.message)]
    Conflict(Box<ErrorBody>),
    /// 410 `Gone`: the requested resourceVersion has been compacted away.
    #[error("{}", .0.message)]
    Gone(Box<ErrorBody>),
    /// 410 `Expired`: a continue token or watch that is too old.
    #[error("{}", .0.message)]
    Expired(Box<ErrorBody>),
    /// 413 `RequestEntityTooLarge`: the body is over the size limit.
    #[error("{}", .0.message)]
    RequestEntityTooLarge(Box<ErrorBody>),
    /// 415 `UnsupportedMediaType`: the body's content type (for example a patch type) is not accepted.
    #[error("{}", .0.message)]
    UnsupportedMediaType(Box<ErrorBody>),
    /// 422 `Invalid`: validation failed; the details carry one cause per field.
    #[error("{}", .0.message)]
    Invalid(Box<ErrorBody>),
    /// 429 `TooManyRequests`: rate limited, or an eviction that would break a disruption budget.
    #[error("{}", .0.message)]
    TooManyRequests(Box<ErrorBody>),
    /// 500 `InternalError`: a server-side bug or storage failure.
    #[error("{}", .0.message)]
    Internal(Box<ErrorBody>),
    /// 503 `ServiceUnavailable`: the server is not ready or a dependency is down.
    #[error("{}", .0.message)]
    ServiceUnavailable(Box<ErrorBody>),
    /// 504 `Timeout`: the request could not complete in time (also: a resourceVersion too large to wait for).
    #[error("{}", .0.message)]
    Timeout(Box<ErrorBody>),
    /// Any other reason a server sent; kept whole so that nothing is lost.
    #[error("{}", .0.message.as_deref().unwrap_or("unknown error"))]
    Other(Box<Status>),
}

macro_rules! constructors {
    ($($(#[$doc:meta])* $fn:ident => $variant:ident;)*) => {
        impl Error {
            $(
                $(#[$doc])*
                pub fn $fn(message: impl Into<String>) -> Self {
                    Self::$variant(ErrorBody::new(message))
                }
            )*
        }
    };
}

constructors! {
    /// A 400 `BadRequest` with this message.
    bad_request => BadRequest;
    /// A 401 `Unauthorized` with this message.
    unauthorized => Unauthorized;
    /// A 403 `Forbidden` with this message.
    forbidden => Forbidden;
    /// A 405 `MethodNotAllowed` with this message.
    method_not_allowed => MethodNotAllowed;
    /// A 406 `NotAcceptable` with this message.
    not_acceptable => NotAcceptable;
    /// A 409 `Conflict` with this message.
    conflict => Conflict;
    /// A 410 `Gone` with this message.
    gone => Gone;
    /// A 410 `Expired` with this message.
    expired => Expired;
    /// A 413 `RequestEntityTooLarge` with this message.
    too_large => RequestEntityTooLarge;
    /// A 415 `UnsupportedMediaType` with this message.
    unsupported_media_type => UnsupportedMediaType;
    /// A 429 `TooManyRequests` with this message.
    too_many_requests => TooManyRequests;
    /// A 500 `InternalError` with this message.
    internal => Internal;
    /// A 503 `ServiceUnavailable` with this message.
    unavailable => ServiceUnavailable;
    /// A 504 `Timeout` with this message.
    timeout => Timeout;
}

/// One field-level validation failure, as a `StatusCause` of an `Invalid` error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The cause type, e.g. `FieldValueRequired`, `FieldValueInvalid`, `FieldValueDuplicate`.
    pub reason: String,
    /// JSON-path-like field, e.g. `spec.template.spec.containers[0].image`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    /// `FieldValueRequired`: the field must be set.
    pub fn required(field: impl Into<String>) -> Self {
        Self { reason: "FieldValueRequired".into(), field: field.into(), message: "Required value".into() }
    }

    /// `FieldValueInvalid`: the value is not allowed; `detail` says why.
    pub fn invalid(field: impl Into<String>, value: impl std::fmt::Display, detail: impl std::fmt::Display) -> Self {
        Self { reason: "FieldValueInvalid".into(), field: field.into(), message: format!("Invalid value: \"{value}\": {detail}") }
    }

    /// `FieldValueForbidden`: the field may not be set or changed (immutable fields).
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { reason: "FieldValueForbidden".into(), field: field.into(), message: format!("Forbidden: {}", detail.into()) }
    }

    /// `FieldValueNotSupported`: the value is not one of the allowed values.
    pub fn not_supported(field: impl Into<String>, value: impl std::fmt::Display, allowed: &[&str]) -> Self {
        let allowed: Vec<String> = allowed.iter().map(|v| format!("\"{v}\"")).collect();
        Self {
            reason: "FieldValueNotSupported".into(),
            field: field.into(),
            message: format!("Unsupported value: \"{value}\": supported values: {}", allowed.join(", ")),
        }
    }

    /// `FieldValueDuplicate`: the value appears twice where it must be unique.
    pub fn duplicate(field: impl Into<String>, value: impl std::fmt::Display) -> Self {
        Self { reason: "FieldValueDuplicate".into(), field: field.into(), message: format!("Duplicate value: \"{value}\"") }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl Error {
    /// 404 for an object: `{resource} "{name}" not found`, as kube-apiserver words it.
    pub fn not_found(group: &str, resource: &str, name: &str) -> Self {
        let qualified = qualified(group, resource);
        Self::NotFound(ErrorBody::about(format!("{qualified} \"{name}\" not found"), group, resource, name))
    }

    /// 409 `AlreadyExists` for an object.
    pub fn already_exists(group: &str, resource: &str, name: &str) -> Self {
        let qualified = qualified(group, resource);
        Self::AlreadyExists(ErrorBody::about(format!("{qualified} \"{name}\" already exists"), group, resource, name))
    }

    /// 409 `Conflict` on a stale resourceVersion, worded as kube-apiserver does.
    pub fn stale(group: &str, resource: &str, name: &str) -> Self {
        let qualified = qualified(group, resource);
        Self::Conflict(ErrorBody::about(
            format!(
                "Operation cannot be fulfilled on {qualified} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
            ),
            group,
            resource,
            name,
        ))
    }

    /// 422 `Invalid` with one cause per field error; `kind` is the object's kind (`Deployment`).
    pub fn invalid(group: &str, kind: &str, name: &str, errors: Vec<FieldError>) -> Self {
        let summary: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let qualified = qualified(group, kind);
        let mut body = ErrorBody::about(format!("{qualified} \"{name}\" is invalid: {}", summary.join(", ")), group, kind, name);
        if let Some(details) = body.details.as_mut() {
            details.causes = Some(
                errors
                    .into_iter()
                    .map(|e| StatusCause { field: Some(e.field), message: Some(e.message), reason: Some(e.reason) })
                    .collect(),
            );
        }
        Self::Invalid(body)
    }

    /// The HTTP status code of this error.
    pub fn code(&self) -> u16 {
        match self {
            Self::BadRequest(_) => 400,
            Self::Unauthorized(_) => 401,
            Self::Forbidden(_) => 403,
            Self::NotFound(_) => 404,
            Self::MethodNotAllowed(_) => 405,
            Self::NotAcceptable(_) => 406,
            Self::AlreadyExists(_) | Self::Conflict(_) => 409,
            Self::Gone(_) | Self::Expired(_) => 410,
            Self::RequestEntityTooLarge(_) => 413,
            Self::UnsupportedMediaType(_) => 415,
            Self::Invalid(_) => 422,
            Self::TooManyRequests(_) => 429,
            Self::Internal(_) => 500,
            Self::ServiceUnavailable(_) => 503,
            Self::Timeout(_) => 504,
            Self::Other(s) => s.code.and_then(|c| u16::try_from(c).ok()).unwrap_or(500),
        }
    }

    /// The `Status.reason` string of this error.
    pub fn reason(&self) -> &str {
        match self {
            Self::BadRequest(_) => "BadRequest",
            Self::Unauthorized(_) => "Unauthorized",
            Self::Forbidden(_) => "Forbidden",
            Self::NotFound(_) => "NotFound",
            Self::MethodNotAllowed(_) => "MethodNotAllowed",
            Self::NotAcceptable(_) => "NotAcceptable",
            Self::AlreadyExists(_) => "AlreadyExists",
            Self::Conflict(_) => "Conflict",
            Self::Gone(_) => "Gone",
            Self::Expired(_) => "Expired",
            Self::RequestEntityTooLarge(_) => "RequestEntityTooLarge",
            Self::UnsupportedMediaType(_) => "UnsupportedMediaType",
            Self::Invalid(_) => "Invalid",
            Self::TooManyRequests(_) => "TooManyRequests",
            Self::Internal(_) => "InternalError",
            Self::ServiceUnavailable(_) => "ServiceUnavailable",
            Self::Timeout(_) => "Timeout",
            Self::Other(s) => s.reason.as_deref().unwrap_or(""),
        }
    }

    /// The body (message and details), for every variant but [`Error::Other`].
    pub fn body(&self) -> Option<&ErrorBody> {
        match self {
            Self::BadRequest(b)
            | Self::Unauthorized(b)
            | Self::Forbidden(b)
            | Self::NotFound(b)
            | Self::MethodNotAllowed(b)
            | Self::NotAcceptable(b)
            | Self::AlreadyExists(b)
            | Self::Conflict(b)
            | Self::Gone(b)
            | Self::Expired(b)
            | Self::RequestEntityTooLarge(b)
            | Self::UnsupportedMediaType(b)
            | Self::Invalid(b)
            | Self::TooManyRequests(b)
            | Self::Internal(b)
            | Self::ServiceUnavailable(b)
            | Self::Timeout(b) => Some(b),
            Self::Other(_) => None,
        }
    }

    /// The field causes of an `Invalid` (or any) error.
    pub fn causes(&self) -> &[StatusCause] {
        let details = match self {
            Self::Other(s) => s.details.as_ref(),
            _ => self.body().and_then(|b| b.details.as_ref()),
        };
        details.and_then(|d| d.causes.as_deref()).unwrap_or(&[])
    }

    /// True for 404.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound(_))
    }

    /// True for 409 `Conflict` (not `AlreadyExists`).
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict(_))
    }

    /// True for 409 `AlreadyExists`.
    pub fn is_already_exists(&self) -> bool {
        matches!(self, Self::AlreadyExists(_))
    }

    /// True for 410 `Gone` or `Expired`: the caller must relist.
    pub fn is_gone(&self) -> bool {
        matches!(self, Self::Gone(_) | Self::Expired(_))
    }

    /// True for 422 `Invalid`.
    pub fn is_invalid(&self) -> bool {
        matches!(self, Self::Invalid(_))
    }

    /// Worth retrying as is: 429, 500, 503, 504.
    pub fn is_retryable(&self) -> bool {
        matches!(self.code(), 429 | 500 | 503 | 504)
    }

    /// This error as a `metav1.Status` object (`status: Failure`).
    pub fn to_status(&self) -> Status {
        if let Self::Other(status) = self {
            return (**status).clone();
        }
        let body = self.body().cloned().unwrap_or_default();
        Status {
            code: Some(i32::from(self.code())),
            details: body.details,
            message: Some(body.message),
            metadata: ListMeta::default(),
            reason: Some(self.reason().to_owned()),
            status: Some("Failure".to_owned()),
        }
    }

    /// The error a `Status` describes. Known reasons become their variant; unknown ones
    /// fall back on the code, and a status with neither stays whole in [`Error::Other`].
    pub fn from_status(status: Status) -> Self {
        let body = Box::new(ErrorBody { message: status.message.clone().unwrap_or_default(), details: status.details.clone() });
        let by_reason = match status.reason.as_deref().unwrap_or("") {
            "BadRequest" => Some(Self::BadRequest(body.clone())),
            "Unauthorized" => Some(Self::Unauthorized(body.clone())),
            "Forbidden" => Some(Self::Forbidden(body.clone())),
            "NotFound" => Some(Self::NotFound(body.clone())),
            "MethodNotAllowed" => Some(Self::MethodNotAllowed(body.clone())),
            "NotAcceptable" => Some(Self::NotAcceptable(body.clone())),
            "AlreadyExists" => Some(Self::AlreadyExists(body.clone())),
            "Conflict" => Some(Self::Conflict(body.clone())),
            "Gone" => Some(Self::Gone(body.clone())),
            "Expired" => Some(Self::Expired(body.clone())),
            "RequestEntityTooLarge" => Some(Self::RequestEntityTooLarge(body.clone())),
            "UnsupportedMediaType" => Some(Self::UnsupportedMediaType(body.clone())),
            "Invalid" => Some(Self::Invalid(body.clone())),
            "TooManyRequests" => Some(Self::TooManyRequests(body.clone())),
            "InternalError" => Some(Self::Internal(body.clone())),
            "ServiceUnavailable" => Some(Self::ServiceUnavailable(body.clone())),
            "Timeout" => Some(Self::Timeout(body.clone())),
            _ => None,
        };
        if let Some(err) = by_reason {
            return err;
        }
        match status.code {
            Some(400) => Self::BadRequest(body),
            Some(401) => Self::Unauthorized(body),
            Some(403) => Self::Forbidden(body),
            Some(404) => Self::NotFound(body),
            Some(405) => Self::MethodNotAllowed(body),
            Some(406) => Self::NotAcceptable(body),
            Some(410) => Self::Gone(body),
            Some(413) => Self::RequestEntityTooLarge(body),
            Some(415) => Self::UnsupportedMediaType(body),
            Some(422) => Self::Invalid(body),
            Some(429) => Self::TooManyRequests(body),
            Some(503) => Self::ServiceUnavailable(body),
            Some(504) => Self::Timeout(body),
            _ => Self::Other(Box::new(status)),
        }
    }
}

impl From<Status> for Error {
    fn from(status: Status) -> Self {
        Self::from_status(status)
    }
}

impl From<&Error> for Status {
    fn from(err: &Error) -> Self {
        err.to_status()
    }
}

/// `resource.group` as kube-apiserver prints it in messages, or the bare resource for the core group.
fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() { resource.to_owned() } else { format!("{resource}.{group}") }
}

/// A `Status` reporting success (`status: Success`), as DELETE and binding return.
pub fn success_status(details: Option<StatusDetails>) -> Status {
    Status { code: Some(200), details, message: None, metadata: ListMeta::default(), reason: None, status: Some("Success".to_owned()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_variant() -> Vec<Error> {
        vec![
            Error::bad_request("m"),
            Error::unauthorized("m"),
            Error::forbidden("m"),
            Error::not_found("apps", "deployments", "web"),
            Error::method_not_allowed("m"),
            Error::not_acceptable("m"),
            Error::already_exists("", "pods", "p"),
            Error::stale("", "pods", "p"),
            Error::gone("m"),
            Error::expired("m"),
            Error::too_large("m"),
            Error::unsupported_media_type("m"),
            Error::invalid("apps", "Deployment", "web", vec![FieldError::required("spec.selector")]),
            Error::too_many_requests("m"),
            Error::internal("m"),
            Error::unavailable("m"),
            Error::timeout("m"),
        ]
    }

    #[test]
    fn every_variant_survives_a_round_trip_through_status() {
        for err in every_variant() {
            let status = err.to_status();
            assert_eq!(status.code, Some(i32::from(err.code())));
            assert_eq!(status.status.as_deref(), Some("Failure"));
            assert_eq!(Error::from_status(status), err, "{err:?}");
        }
    }

    #[test]
    fn codes_match_kubernetes() {
        let codes: Vec<u16> = every_variant().iter().map(Error::code).collect();
        assert_eq!(codes, [400, 401, 403, 404, 405, 406, 409, 409, 410, 410, 413, 415, 422, 429, 500, 503, 504]);
    }

    #[test]
    fn not_found_is_worded_as_kube_apiserver_words_it() {
        let err = Error::not_found("apps", "deployments", "web");
        assert_eq!(err.to_string(), "deployments.apps \"web\" not found");
        let err = Error::not_found("", "pods", "p");
        assert_eq!(err.to_string(), "pods \"p\" not found");
        let details = err.to_status().details.unwrap_or_default();
        assert_eq!(details.name.as_deref(), Some("p"));
        assert_eq!(details.kind.as_deref(), Some("pods"));
    }

    #[test]
    fn invalid_carries_one_cause_per_field() {
        let err = Error::invalid(
            "",
            "Pod",
            "p",
            vec![FieldError::required("spec.containers"), FieldError::invalid("metadata.name", "A", "must be lowercase")],
        );
        assert_eq!(err.causes().len(), 2);
        assert_eq!(err.causes()[0].field.as_deref(), Some("spec.containers"));
        assert_eq!(err.causes()[1].reason.as_deref(), Some("FieldValueInvalid"));
        assert!(err.to_string().starts_with("Pod \"p\" is invalid: spec.containers: Required value"));
    }

    #[test]
    fn unknown_reason_falls_back_on_the_code_then_stays_whole() {
        let by_code = Status { code: Some(404), reason: Some("Weird".into()), ..Status::default() };
        assert!(Error::from_status(by_code).is_not_found());
        let unknown = Status { code: Some(418), reason: Some("Teapot".into()), message: Some("short".into()), ..Status::default() };
        let err = Error::from_status(unknown.clone());
        assert_eq!(err.code(), 418);
        assert_eq!(err.reason(), "Teapot");
        assert_eq!(err.to_status(), unknown);
    }
}
