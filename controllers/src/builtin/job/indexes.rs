//! Sets of completion indexes in the compressed text form `status.completedIndexes` and
//! `status.failedIndexes` use: sorted, comma-separated single indexes and inclusive ranges
//! (`"0-3,5,7-8"`).

use std::collections::BTreeSet;
use std::fmt;

/// A set of completion indexes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexSet(BTreeSet<i32>);

impl IndexSet {
    /// Parses the text form, keeping only indexes below `completions`; malformed parts are
    /// skipped, as Kubernetes does when it reads its own status back.
    pub fn parse(text: &str, completions: i32) -> Self {
        let mut set = BTreeSet::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (first, last) = match part.split_once('-') {
                Some((a, b)) => (a.trim().parse::<i32>(), b.trim().parse::<i32>()),
                None => (part.parse::<i32>(), part.parse::<i32>()),
            };
            let (Ok(first), Ok(last)) = (first, last) else { continue };
            let last = last.min(completions.saturating_sub(1));
            if first < 0 || first > last {
                continue;
            }
            set.extend(first..=last);
        }
        Self(set)
    }

    /// Whether `index` is in the set.
    pub fn contains(&self, index: i32) -> bool {
        self.0.contains(&index)
    }

    /// Adds `index`; returns whether it was new.
    pub fn insert(&mut self, index: i32) -> bool {
        self.0.insert(index)
    }

    /// How many indexes the set holds.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The indexes in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = i32> + '_ {
        self.0.iter().copied()
    }
}

impl fmt::Display for IndexSet {
    /// The text form: runs of consecutive indexes as `a-b` (two or more), single ones alone.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut iter = self.0.iter().copied().peekable();
        while let Some(start) = iter.next() {
            let mut end = start;
            while iter.peek() == Some(&(end + 1)) {
                end += 1;
                iter.next();
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if end == start {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::IndexSet;

    #[test]
    fn consecutive_indexes_compress_into_ranges() {
        let mut s = IndexSet::default();
        for i in [5, 0, 1, 2, 3, 7, 8] {
            s.insert(i);
        }
        assert_eq!(s.to_string(), "0-3,5,7-8");
        assert_eq!(IndexSet::default().to_string(), "");
    }

    #[test]
    fn the_text_form_parses_back_within_completions() {
        let s = IndexSet::parse("0-3,5,7-8", 8);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0, 1, 2, 3, 5, 7]);
        assert_eq!(IndexSet::parse("x,2,4-1,3", 10).to_string(), "2-3");
        assert!(IndexSet::parse("", 3).is_empty());
    }
}
