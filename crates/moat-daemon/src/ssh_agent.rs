//! The ssh-agent a run with the `ssh` grant sees at `SSH_AUTH_SOCK`: a
//! unix socket in the run's directory, mounted into its container, that
//! lists only the granted keys, forwards signing requests for those keys
//! to the host's ssh-agent (the private keys never leave it) and answers
//! every other message with `SSH_AGENT_FAILURE`. Served while the run
//! lives; a revoke empties the run's key list at once. Each signature is
//! audited with the key's fingerprint.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use moat_core::RunId;
use moat_creds::ssh::{PublicKey, SshKeyGrant};
use moat_creds::ssh_agent::{self, Identity, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinSet;

use crate::audit::{AuditLog, Event};

/// The agent's directory inside the run's directory, and in the container.
pub const AGENT_DIR: &str = "ssh-agent";
pub const CONTAINER_AGENT_DIR: &str = "/etc/moat/ssh-agent";
pub const SOCKET_NAME: &str = "agent.sock";
/// How long a container's agent connection may sit idle between messages.
const IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Bound on connecting and writing to the host's agent, and on answering.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on the host agent's signature (it may ask the user to confirm).
const SIGN_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("serving the ssh agent at {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the ssh agent socket path {} is longer than a unix socket allows", .0.display())]
    PathTooLong(PathBuf),
}

/// Whether the container's user can use an owner-only socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketAccess {
    /// The run's user is the daemon's user: socket 0600, directory 0700.
    Owner,
    /// Another user: socket 0666 in a 0711 directory, reachable only
    /// through the run's private (0700) directory and its own container.
    AnyUserOfTheContainer,
}

impl SocketAccess {
    /// [`SocketAccess::Owner`] when `run_user` (`uid[:gid]`) is the daemon's
    /// uid.
    pub fn for_run_user(run_user: Option<&str>) -> Self {
        let uid = run_user.and_then(|u| u.split(':').next()?.parse::<u32>().ok());
        if uid == Some(nix::unistd::getuid().as_raw()) {
            SocketAccess::Owner
        } else {
            SocketAccess::AnyUserOfTheContainer
        }
    }

    fn modes(self) -> (u32, u32) {
        match self {
            SocketAccess::Owner => (0o700, 0o600),
            SocketAccess::AnyUserOfTheContainer => (0o711, 0o666),
        }
    }
}

/// The keys one run's agent serves; swapped when grants change.
type GrantedKeys = Arc<RwLock<Vec<SshKeyGrant>>>;

struct Served {
    keys: GrantedKeys,
    task: tokio::task::AbortHandle,
}

/// Every live run's agent, by run.
#[derive(Default)]
pub struct SshAgents {
    runs: Mutex<HashMap<RunId, Served>>,
}

impl SshAgents {
    /// Serves `keys` to run `id` at `run_dir/ssh-agent/agent.sock`
    /// (replacing an earlier agent of the run); returns the directory to
    /// mount at [`CONTAINER_AGENT_DIR`].
    pub fn start(
        &self,
        audit: &AuditLog,
        id: &RunId,
        run_dir: &Path,
        keys: Vec<SshKeyGrant>,
        access: SocketAccess,
    ) -> Result<PathBuf, AgentError> {
        let dir = run_dir.join(AGENT_DIR);
        let socket = dir.join(SOCKET_NAME);
        if socket.as_os_str().len() >= 108 {
            return Err(AgentError::PathTooLong(socket));
        }
        let io_error = |path: &Path| {
            let path = path.to_path_buf();
            move |source| AgentError::Io { path, source }
        };
        let (dir_mode, socket_mode) = access.modes();
        std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(dir_mode)).map_err(io_error(&dir))?;
        match std::fs::remove_file(&socket) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_error(&socket)(e)),
            _ => {}
        }
        let listener = UnixListener::bind(&socket).map_err(io_error(&socket))?;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(socket_mode)).map_err(io_error(&socket))?;
        let keys: GrantedKeys = Arc::new(RwLock::new(keys));
        let context = Arc::new(Context {
            run: id.clone(),
            keys: keys.clone(),
            audit: audit.clone(),
        });
        let task = tokio::spawn(serve(listener, context)).abort_handle();
        let previous = lock(&self.runs).insert(id.clone(), Served { keys, task });
        if let Some(previous) = previous {
            previous.task.abort();
        }
        Ok(dir)
    }

    /// Replaces the keys run `id`'s agent serves (empty: it signs nothing).
    pub fn update(&self, id: &RunId, keys: Vec<SshKeyGrant>) {
        if let Some(served) = lock(&self.runs).get(id) {
            *served.keys.write().unwrap_or_else(std::sync::PoisonError::into_inner) = keys;
        }
    }

    /// Stops run `id`'s agent and every connection to it.
    pub fn stop(&self, id: &RunId) {
        if let Some(served) = lock(&self.runs).remove(id) {
            served.task.abort();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct Context {
    run: RunId,
    keys: GrantedKeys,
    audit: AuditLog,
}

impl Context {
    fn granted(&self) -> Vec<SshKeyGrant> {
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Accepts connections until aborted; the connections end with it.
async fn serve(listener: UnixListener, context: Arc<Context>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, context.clone()));
                }
                Err(e) => {
                    tracing::warn!(run = %context.run, "ssh agent accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next() => {}
        }
    }
}

async fn serve_connection(mut stream: UnixStream, context: Arc<Context>) {
    loop {
        let payload = match tokio::time::timeout(IDLE_TIMEOUT, read_message(&mut stream)).await {
            Ok(Ok(payload)) => payload,
            Ok(Err(e)) => {
                tracing::debug!(run = %context.run, "ssh agent connection ends: {e}");
                return;
            }
            Err(_) => return,
        };
        let answer = answer(&context, &payload).await;
        let written = tokio::time::timeout(IO_TIMEOUT, stream.write_all(&ssh_agent::frame(&answer))).await;
        if !matches!(written, Ok(Ok(()))) {
            return;
        }
    }
}

async fn read_message(stream: &mut UnixStream) -> std::io::Result<Vec<u8>> {
    let mut prefix = [0u8; 4];
    stream.read_exact(&mut prefix).await?;
    let len = ssh_agent::announced_len(prefix).map_err(std::io::Error::other)?;
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await?;
    Ok(payload)
}

/// The answer to one message: the granted keys, a signature by a granted
/// key, or failure.
async fn answer(context: &Context, payload: &[u8]) -> Vec<u8> {
    match ssh_agent::parse_request(payload) {
        Ok(Request::Identities) => ssh_agent::identities_answer(&identities(&context.granted())),
        Ok(Request::Sign { key_blob, .. }) => sign(context, &key_blob, payload).await,
        Ok(Request::Other(kind)) => {
            tracing::debug!(run = %context.run, "ssh agent refuses message type {kind}");
            ssh_agent::failure()
        }
        Err(e) => {
            tracing::debug!(run = %context.run, "ssh agent: {e}");
            ssh_agent::failure()
        }
    }
}

fn identities(keys: &[SshKeyGrant]) -> Vec<Identity> {
    let mut identities: Vec<Identity> = Vec::new();
    for grant in keys {
        let Ok(key) = grant.key() else { continue };
        if identities.iter().all(|i| i.blob != key.blob) {
            identities.push(Identity {
                blob: key.blob,
                comment: format!("moat grant ssh --host {}", grant.host),
            });
        }
    }
    identities
}

/// Forwards `request` to the host agent when `key_blob` is granted.
async fn sign(context: &Context, key_blob: &[u8], request: &[u8]) -> Vec<u8> {
    let fingerprint = PublicKey {
        blob: key_blob.to_vec(),
    }
    .fingerprint();
    let granted = context.granted();
    let Some(grant) = granted.iter().find(|g| g.key().is_ok_and(|k| k.blob == key_blob)) else {
        context.audit.record(
            &context.run,
            Event::SshSignRefused {
                fingerprint,
                reason: "key not granted".into(),
            },
        );
        return ssh_agent::failure();
    };
    match forward(grant, request).await {
        Ok(response) if response.first() == Some(&ssh_agent::SIGN_RESPONSE) => {
            context.audit.record(
                &context.run,
                Event::SshSigned {
                    fingerprint,
                    host: grant.host.clone(),
                },
            );
            response
        }
        Ok(_) => {
            refused_by_host(context, fingerprint, "the host's ssh-agent refused to sign".into());
            ssh_agent::failure()
        }
        Err(e) => {
            refused_by_host(context, fingerprint, e);
            ssh_agent::failure()
        }
    }
}

fn refused_by_host(context: &Context, fingerprint: String, reason: String) {
    tracing::warn!(run = %context.run, "ssh signature with {fingerprint} failed: {reason}");
    context
        .audit
        .record(&context.run, Event::SshSignRefused { fingerprint, reason });
}

/// The host agent's answer to `request`.
async fn forward(grant: &SshKeyGrant, request: &[u8]) -> Result<Vec<u8>, String> {
    let socket = host_agent_socket(grant)
        .ok_or_else(|| "no host ssh-agent (the grant's socket is gone and SSH_AUTH_SOCK is unset)".to_string())?;
    let shown = socket.display().to_string();
    let mut stream = tokio::time::timeout(IO_TIMEOUT, UnixStream::connect(&socket))
        .await
        .map_err(|_| format!("connecting to the host ssh-agent at {shown} timed out"))?
        .map_err(|e| format!("connecting to the host ssh-agent at {shown}: {e}"))?;
    tokio::time::timeout(IO_TIMEOUT, stream.write_all(&ssh_agent::frame(request)))
        .await
        .map_err(|_| format!("writing to the host ssh-agent at {shown} timed out"))?
        .map_err(|e| format!("writing to the host ssh-agent at {shown}: {e}"))?;
    tokio::time::timeout(SIGN_TIMEOUT, read_message(&mut stream))
        .await
        .map_err(|_| format!("the host ssh-agent at {shown} did not sign within {SIGN_TIMEOUT:?}"))?
        .map_err(|e| format!("reading from the host ssh-agent at {shown}: {e}"))
}

/// The socket recorded at grant time while it exists, else the daemon's
/// own `SSH_AUTH_SOCK`.
fn host_agent_socket(grant: &SshKeyGrant) -> Option<PathBuf> {
    grant
        .agent_socket
        .clone()
        .filter(|path| path.exists())
        .or_else(|| moat_core::env_vars::read("SSH_AUTH_SOCK").map(PathBuf::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMrLTKnXEOZtZPfHq03jc7B/i/x3eeJH7ZF0c8K1PtdB";

    fn grant(agent_socket: Option<PathBuf>) -> SshKeyGrant {
        let key = PublicKey::parse_openssh(KEY).unwrap();
        SshKeyGrant {
            host: "git.test".into(),
            fingerprint: key.fingerprint(),
            public_key: key.to_openssh(),
            known_hosts: Vec::new(),
            agent_socket,
        }
    }

    /// A host agent that signs anything with a fixed answer and counts
    /// the requests it got.
    async fn fake_host_agent(path: PathBuf) -> Arc<std::sync::atomic::AtomicUsize> {
        let listener = UnixListener::bind(&path).unwrap();
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = count.clone();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let _ = read_message(&mut stream).await.unwrap();
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let answer = ssh_agent::frame(&[ssh_agent::SIGN_RESPONSE, 0, 0, 0, 3, b's', b'i', b'g']);
                stream.write_all(&answer).await.unwrap();
            }
        });
        count
    }

    async fn ask(socket: &Path, request: &Request) -> Vec<u8> {
        let mut stream = UnixStream::connect(socket).await.unwrap();
        stream
            .write_all(&ssh_agent::frame(&ssh_agent::encode_request(request)))
            .await
            .unwrap();
        read_message(&mut stream).await.unwrap()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn lists_and_signs_only_granted_keys_refuses_the_rest_and_stops_on_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let host_socket = dir.path().join("host.sock");
        let host_signatures = fake_host_agent(host_socket.clone()).await;
        let home = moat_core::MoatHome::new(dir.path().join("home"));
        let audit = AuditLog::start(&home);
        let agents = SshAgents::default();
        let run = RunId::generate();
        let served = agents
            .start(
                &audit,
                &run,
                dir.path(),
                vec![grant(Some(host_socket))],
                SocketAccess::Owner,
            )
            .unwrap();
        let socket = served.join(SOCKET_NAME);
        let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        let listed = ssh_agent::parse_identities_answer(&ask(&socket, &Request::Identities).await).unwrap();
        let granted = PublicKey::parse_openssh(KEY).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].blob, granted.blob);

        let sign_granted = Request::Sign {
            key_blob: granted.blob.clone(),
            data: b"session".to_vec(),
            flags: 0,
        };
        assert_eq!(ask(&socket, &sign_granted).await[0], ssh_agent::SIGN_RESPONSE);
        let other_key = Request::Sign {
            key_blob: b"\0\0\0\x0bssh-ed25519\0\0\0\x20another-key-not-granted-32bytes".to_vec(),
            data: b"session".to_vec(),
            flags: 0,
        };
        assert_eq!(ask(&socket, &other_key).await, [ssh_agent::FAILURE]);
        // Adding keys (17), removing all (19), locking (22), extensions (27).
        for kind in [17, 19, 22, 27] {
            assert_eq!(
                ask(&socket, &Request::Other(kind)).await,
                [ssh_agent::FAILURE],
                "{kind}"
            );
        }
        assert_eq!(host_signatures.load(std::sync::atomic::Ordering::SeqCst), 1);

        agents.update(&run, Vec::new());
        assert_eq!(ask(&socket, &sign_granted).await, [ssh_agent::FAILURE]);
        let listed = ssh_agent::parse_identities_answer(&ask(&socket, &Request::Identities).await).unwrap();
        assert!(listed.is_empty());
        assert_eq!(host_signatures.load(std::sync::atomic::Ordering::SeqCst), 1);

        agents.stop(&run);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            UnixStream::connect(&socket).await.is_err(),
            "the agent outlived its run"
        );
    }

    #[test]
    fn the_socket_is_owner_only_for_the_daemons_own_uid() {
        let me = nix::unistd::getuid().as_raw();
        assert_eq!(
            SocketAccess::for_run_user(Some(&format!("{me}:{me}"))),
            SocketAccess::Owner
        );
        assert_eq!(
            SocketAccess::for_run_user(Some(&format!("{}:0", me + 1))),
            SocketAccess::AnyUserOfTheContainer
        );
        assert_eq!(
            SocketAccess::for_run_user(Some("node")),
            SocketAccess::AnyUserOfTheContainer
        );
    }
}
