//! End-to-end tests through the real `moat` binary, its daemon and the real
//! Docker engine.

mod docker {
    pub mod audit;
    pub mod exec_status;
    pub mod fail_closed;
    pub mod isolation;
    pub mod lifecycle;
    pub mod netpool;
    pub mod policy;
    pub mod proxy;
    pub mod reaper;
    pub mod support;
    pub mod trust;
    pub mod upstream;
    pub mod warmpool;
}
