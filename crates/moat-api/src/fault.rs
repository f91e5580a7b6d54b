//! Names shared by the fault-injection tests, the CLI and the daemon (the
//! daemon's crash points act only in debug builds): a run whose spec carries
//! the label `dev.moat.fault=<point>:kill` makes the daemon SIGKILL itself at
//! that step of the run's creation; `<point>:pause` holds the creation there
//! for a few seconds. The CLI sets the label from `MOAT_FAULT` in debug
//! builds.

/// Names of the crash points, in the order run creation reaches them.
pub const POINTS: &[&str] = &[
    "after-registry-write",
    "after-network-create",
    "after-container-create",
    "after-start",
];

/// After a service sidecar is created, before it starts (runs with
/// services only, so not among [`POINTS`]).
pub const AFTER_SERVICE_CREATE: &str = "after-service-create";

/// The start of a run's cleanup (after its exit was announced); `pause`
/// there lets a test act while the cleanup is pending.
pub const BEFORE_CLEANUP: &str = "before-cleanup";

/// Run label carrying the crash point to the daemon.
pub const LABEL: &str = "dev.moat.fault";
