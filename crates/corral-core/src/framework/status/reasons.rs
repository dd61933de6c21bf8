//! [`Reasons`]: a status's reasons, stored without allocation when there is one
//! borrowed (`&'static str`) reason, the common case of a Filter rejecting a node with
//! kube's fixed message.

use std::borrow::Cow;
use std::fmt;
use std::ops::Deref;

type Reason = Cow<'static, str>;

/// The reasons of a [`super::Status`], read as a slice (`&[Cow<'static, str>]`).
/// Zero or one reason is held inline (24 bytes, like the `Cow` itself); two or more
/// in a boxed slice. Equality is by the reasons' text, whatever the representation.
#[derive(Clone, Default)]
pub struct Reasons(Repr);

#[derive(Clone, Default)]
enum Repr {
    #[default]
    None,
    One(Reason),
    Many(Box<[Reason]>),
}

impl Reasons {
    /// No reasons (no allocation).
    #[inline]
    pub const fn new() -> Reasons {
        Reasons(Repr::None)
    }

    /// One reason; no allocation when it is borrowed.
    #[inline]
    pub const fn one(r: Reason) -> Reasons {
        Reasons(Repr::One(r))
    }

    /// The reasons as a slice.
    #[inline]
    pub fn as_slice(&self) -> &[Reason] {
        match &self.0 {
            Repr::None => &[],
            Repr::One(r) => std::slice::from_ref(r),
            Repr::Many(v) => v,
        }
    }

    /// Equal texts, comparing a constant text's address before its bytes.
    pub fn same(&self, o: &Reasons) -> bool {
        let (a, b) = (self.as_slice(), o.as_slice());
        a.len() == b.len()
            && a.iter().zip(b).all(|(x, y)| {
                x.len() == y.len() && (std::ptr::eq(x.as_ptr(), y.as_ptr()) || x == y)
            })
    }

    /// Appends a reason (allocates from the second one on).
    pub fn push(&mut self, r: impl Into<Reason>) {
        let r = r.into();
        self.0 = match std::mem::take(&mut self.0) {
            Repr::None => Repr::One(r),
            Repr::One(a) => Repr::Many(Box::new([a, r])),
            Repr::Many(v) => {
                let mut v = v.into_vec();
                v.push(r);
                Repr::Many(v.into_boxed_slice())
            }
        };
    }
}

impl Deref for Reasons {
    type Target = [Reason];

    #[inline]
    fn deref(&self) -> &[Reason] {
        self.as_slice()
    }
}

impl<'a> IntoIterator for &'a Reasons {
    type Item = &'a Reason;
    type IntoIter = std::slice::Iter<'a, Reason>;

    fn into_iter(self) -> Self::IntoIter {
        self.as_slice().iter()
    }
}

impl From<Vec<Reason>> for Reasons {
    fn from(mut v: Vec<Reason>) -> Reasons {
        match v.len() {
            0 => Reasons::new(),
            1 => Reasons::one(v.pop().expect("one element")),
            _ => Reasons(Repr::Many(v.into_boxed_slice())),
        }
    }
}

impl FromIterator<Reason> for Reasons {
    fn from_iter<I: IntoIterator<Item = Reason>>(iter: I) -> Reasons {
        let mut it = iter.into_iter();
        let Some(first) = it.next() else {
            return Reasons::new();
        };
        let Some(second) = it.next() else {
            return Reasons::one(first);
        };
        let mut v = vec![first, second];
        v.extend(it);
        Reasons(Repr::Many(v.into_boxed_slice()))
    }
}

impl fmt::Debug for Reasons {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl PartialEq for Reasons {
    fn eq(&self, o: &Reasons) -> bool {
        self.as_slice() == o.as_slice()
    }
}

impl Eq for Reasons {}

/// Text equality of each reason with `other`'s.
fn same<S: AsRef<str>>(a: &[Reason], b: &[S]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.as_ref() == y.as_ref())
}

impl<S: AsRef<str>> PartialEq<[S]> for Reasons {
    fn eq(&self, o: &[S]) -> bool {
        same(self, o)
    }
}

impl<S: AsRef<str>> PartialEq<&[S]> for Reasons {
    fn eq(&self, o: &&[S]) -> bool {
        same(self, o)
    }
}

impl<S: AsRef<str>, const N: usize> PartialEq<[S; N]> for Reasons {
    fn eq(&self, o: &[S; N]) -> bool {
        same(self, o)
    }
}

impl<S: AsRef<str>> PartialEq<Vec<S>> for Reasons {
    fn eq(&self, o: &Vec<S>) -> bool {
        same(self, o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "node(s) didn't match pod topology spread constraints";

    #[test]
    fn one_borrowed_reason_is_inline_and_compares_by_text() {
        let r = Reasons::one(Cow::Borrowed(A));
        assert_eq!(r.len(), 1);
        assert!(matches!(r.0, Repr::One(Cow::Borrowed(_))));
        assert_eq!(r, vec![A]);
        assert_eq!(r, [A]);
        assert_eq!(r, [A.to_string()]);
        // Same text, other representation (owned, boxed list): equal.
        let owned: Reasons = vec![Cow::Owned(A.to_string())].into();
        assert_eq!(r, owned);
        assert_ne!(r, Reasons::new());
        assert_eq!(
            std::mem::size_of::<Reasons>(),
            std::mem::size_of::<Reason>()
        );
    }

    #[test]
    fn push_and_collect_keep_order() {
        let mut r = Reasons::new();
        assert!(r.is_empty());
        r.push("a");
        r.push(String::from("b"));
        r.push("c");
        assert_eq!(r, ["a", "b", "c"]);
        assert_eq!(r.join(", "), "a, b, c");
        let c: Reasons = ["x", "y"].into_iter().map(Cow::Borrowed).collect();
        assert_eq!(c, vec!["x", "y"]);
        assert_ne!(c, vec!["y", "x"]);
        let one: Reasons = std::iter::once(Cow::Borrowed("x")).collect();
        assert!(matches!(one.0, Repr::One(_)));
        let none: Reasons = Vec::new().into();
        assert_eq!(none, Vec::<&str>::new());
        assert_eq!(format!("{c:?}"), r#"["x", "y"]"#);
    }
}
