//! Plugin status codes and reasons (`framework.Status`).

use std::borrow::Cow;
use std::fmt;

mod reasons;
pub use reasons::Reasons;

/// Status code, as in kube-scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    Success,
    /// Internal error: the pod is retried, the node is not blamed.
    Error,
    /// The node is not feasible now; preemption may help.
    Unschedulable,
    /// The node is not feasible and preemption cannot help.
    UnschedulableAndUnresolvable,
    /// Permit: wait.
    Wait,
    /// The plugin does not apply to this pod (PreFilter/PreScore/Bind).
    Skip,
    /// Waiting on something outside the scheduler.
    Pending,
}

/// Result of a plugin call. Neither `Success` nor a status with one `&'static str`
/// reason allocates (a Filter rejecting a node with kube's fixed reason costs no
/// allocation; only formatted reasons own a `String`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub code: Code,
    pub reasons: Reasons,
    /// Name of the plugin that produced a non-success status.
    pub plugin: &'static str,
}

impl Status {
    #[inline]
    pub const fn success() -> Status {
        Status {
            code: Code::Success,
            reasons: Reasons::new(),
            plugin: "",
        }
    }

    #[inline]
    pub const fn skip() -> Status {
        Status {
            code: Code::Skip,
            reasons: Reasons::new(),
            plugin: "",
        }
    }

    pub fn new(code: Code, reason: impl Into<Cow<'static, str>>) -> Status {
        Status {
            code,
            reasons: Reasons::one(reason.into()),
            plugin: "",
        }
    }

    pub fn unschedulable(reason: impl Into<Cow<'static, str>>) -> Status {
        Status::new(Code::Unschedulable, reason)
    }

    pub fn unresolvable(reason: impl Into<Cow<'static, str>>) -> Status {
        Status::new(Code::UnschedulableAndUnresolvable, reason)
    }

    pub fn error(reason: impl Into<Cow<'static, str>>) -> Status {
        Status::new(Code::Error, reason)
    }

    pub fn with_plugin(mut self, plugin: &'static str) -> Status {
        self.plugin = plugin;
        self
    }

    #[inline]
    pub fn is_success(&self) -> bool {
        self.code == Code::Success
    }

    #[inline]
    pub fn is_skip(&self) -> bool {
        self.code == Code::Skip
    }

    /// Unschedulable or UnschedulableAndUnresolvable.
    #[inline]
    pub fn is_rejected(&self) -> bool {
        matches!(
            self.code,
            Code::Unschedulable | Code::UnschedulableAndUnresolvable
        )
    }

    /// Equal code, plugin and reasons, comparing constant texts by address first
    /// (for tables of distinct statuses).
    pub fn same(&self, o: &Status) -> bool {
        self.code == o.code
            && (std::ptr::eq(self.plugin, o.plugin) || self.plugin == o.plugin)
            && self.reasons.same(&o.reasons)
    }

    /// Reasons joined with ", ".
    pub fn message(&self) -> String {
        match self.reasons.as_slice() {
            [one] => one.to_string(),
            all => all.join(", "),
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.code)?;
        if !self.plugin.is_empty() {
            write!(f, " ({})", self.plugin)?;
        }
        if !self.reasons.is_empty() {
            write!(f, ": {}", self.message())?;
        }
        Ok(())
    }
}
