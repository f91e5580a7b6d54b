//! What every command gets: the printer, the credential profile and access
//! to `MOAT_HOME`; and what every command returns: an [`ExitStatus`].

use std::process::ExitCode;

use anyhow::Result;
use moat_core::MoatHome;
use moat_core::store::RunStore;

use crate::printer::Printer;

pub struct Context {
    pub printer: Printer,
    /// `--profile` / `MOAT_PROFILE`: which set of credentials to use.
    pub profile: Option<String>,
}

impl Context {
    pub fn home(&self) -> Result<MoatHome> {
        Ok(MoatHome::from_env()?)
    }

    pub fn store(&self) -> Result<RunStore> {
        Ok(RunStore::new(self.home()?))
    }
}

/// How a command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    Success,
    /// A failure already reported to the user.
    Failure,
    /// The workload's own exit code (`run`, `exec`).
    Workload(i64),
}

impl From<ExitStatus> for ExitCode {
    fn from(status: ExitStatus) -> ExitCode {
        match status {
            ExitStatus::Success => ExitCode::SUCCESS,
            ExitStatus::Failure => ExitCode::FAILURE,
            ExitStatus::Workload(code) => match u8::try_from(code) {
                Ok(code) => ExitCode::from(code),
                Err(_) => ExitCode::FAILURE,
            },
        }
    }
}
