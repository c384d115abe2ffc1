//! Running agents under governance, and the tool-call hook.
