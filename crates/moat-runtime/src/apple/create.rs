//! The `container create` command line for a [`ContainerSpec`], refusing
//! what the CLI cannot express.

use crate::{ContainerSpec, RuntimeError, RuntimeKind, RuntimeResult};

const MIB: i64 = 1024 * 1024;

/// Arguments of `container create` (after the program name) for `spec`.
/// Labels are dropped: the CLI has none and moat recognises its containers
/// by name.
pub fn create_args(spec: &ContainerSpec) -> RuntimeResult<Vec<String>> {
    refuse_unsupported(spec)?;
    let mut args: Vec<String> = vec!["create".into(), "--name".into(), spec.name.clone()];
    let mut flag = |name: &str, value: String| {
        args.push(name.to_string());
        args.push(value);
    };
    for (key, value) in &spec.env {
        flag("--env", format!("{key}={value}"));
    }
    for mount in &spec.mounts {
        let suffix = if mount.read_only { ":ro" } else { "" };
        flag("--volume", format!("{}:{}{suffix}", mount.source, mount.target));
    }
    if let Some(dir) = &spec.working_dir {
        flag("--workdir", dir.clone());
    }
    if let Some(user) = &spec.user {
        flag("--user", user.clone());
    }
    if let Some(network) = &spec.network {
        flag("--network", network.clone());
    }
    if let Some(bytes) = spec.memory_bytes {
        // The CLI takes whole megabytes (binary, as `4096MB` = 4 GiB).
        let mib = (bytes + MIB - 1) / MIB;
        flag("--memory", format!("{}MB", mib.max(1)));
    }
    if let Some(cpus) = spec.cpus {
        // Whole CPUs only.
        flag("--cpus", format!("{}", cpus.ceil().max(1.0) as u32));
    }
    for server in &spec.dns {
        flag("--dns", server.clone());
    }
    for capability in &spec.cap_add {
        flag("--cap-add", capability.clone());
    }
    if spec.tty {
        args.push("--tty".into());
    }
    if spec.open_stdin {
        args.push("--interactive".into());
    }
    args.push(spec.image.clone());
    args.extend(spec.command.iter().cloned());
    Ok(args)
}

fn refuse_unsupported(spec: &ContainerSpec) -> RuntimeResult<()> {
    let refuse = |message: String| RuntimeError::Other {
        runtime: RuntimeKind::Apple,
        op: format!("create container {}", spec.name),
        message,
    };
    if !spec.extra_hosts.is_empty() {
        let hosts: Vec<&str> = spec.extra_hosts.iter().map(|(h, _)| h.as_str()).collect();
        return Err(refuse(format!(
            "the `container` CLI cannot add /etc/hosts entries ({}); \
             reach the host through the network's gateway instead",
            hosts.join(", ")
        )));
    }
    if let Some(holder) = &spec.network_of {
        return Err(refuse(format!(
            "the `container` CLI cannot join the network of another container ({holder})"
        )));
    }
    if !spec.volumes.is_empty() {
        return Err(refuse(
            "moat does not mount named volumes on the `container` CLI (services.<name>.persist); \
             use the docker runtime"
                .to_string(),
        ));
    }
    if !spec.ulimits.is_empty() || spec.pids_limit.is_some() {
        return Err(refuse(
            "the `container` CLI cannot set container.ulimits or container.pids_limit; \
             remove them or use the docker runtime"
                .to_string(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BindMount;

    #[test]
    fn spec_becomes_flags_then_image_then_command() {
        let spec = ContainerSpec {
            name: "run_0123456789ab".into(),
            image: "alpine:latest".into(),
            command: vec!["sleep".into(), "infinity".into()],
            env: vec![("APP_ENV".into(), "test".into())],
            mounts: vec![BindMount {
                source: "/Users/dev/src/project".into(),
                target: "/workspace".into(),
                read_only: true,
            }],
            working_dir: Some("/workspace".into()),
            network: Some("moat-run_0123456789ab".into()),
            memory_bytes: Some(4 * 1024 * MIB),
            cpus: Some(1.5),
            dns: vec!["8.8.8.8".into()],
            ..ContainerSpec::default()
        };
        let args = create_args(&spec).unwrap();
        let expected = "create --name run_0123456789ab --env APP_ENV=test \
             --volume /Users/dev/src/project:/workspace:ro --workdir /workspace \
             --network moat-run_0123456789ab --memory 4096MB --cpus 2 --dns 8.8.8.8 \
             alpine:latest sleep infinity";
        assert_eq!(args.join(" "), expected);
    }

    #[test]
    fn extra_hosts_are_refused_with_a_reason() {
        let spec = ContainerSpec {
            name: "run_0123456789ab".into(),
            extra_hosts: vec![("host.docker.internal".into(), "host-gateway".into())],
            ..ContainerSpec::default()
        };
        let err = create_args(&spec).unwrap_err().to_string();
        assert!(err.contains("/etc/hosts"), "{err}");
        assert!(err.contains("host.docker.internal"), "{err}");
    }

    #[test]
    fn limits_are_refused_with_their_keys() {
        let spec = ContainerSpec {
            name: "run_0123456789ab".into(),
            pids_limit: Some(64),
            ..ContainerSpec::default()
        };
        let err = create_args(&spec).unwrap_err().to_string();
        assert!(err.contains("container.pids_limit"), "{err}");
    }
}
