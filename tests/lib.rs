//! Workspace-level integration tests (CLI golden scenarios, end-to-end).
