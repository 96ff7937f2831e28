//! Writing an OCI runtime-spec bundle (`config.json`) for a prepared world.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxDeviceCgroup,
    LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxNamespaceBuilder, LinuxNamespaceType,
    LinuxResourcesBuilder, Mount, MountBuilder, ProcessBuilder, RootBuilder, Spec, SpecBuilder,
    UserBuilder,
};

use super::caps::cap_names;
use super::world::World;
use super::{ExecError, SecurityMode};
use crate::mounts::{ContainerMount, MountKind};

/// Paths Docker masks in /proc and /sys (bind of /dev/null or an empty tmpfs).
pub const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths Docker makes read-only in /proc.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// One device cgroup rule: (allow, type, major, minor, access); `None` is the
/// `*` wildcard.
pub type DeviceRule = (
    bool,
    LinuxDeviceType,
    Option<i64>,
    Option<i64>,
    &'static str,
);

/// The device cgroup of a sandboxed step, as runc and Docker set it: every
/// device may be created (CAP_MKNOD is a default capability) but only these
/// opened.
pub const SANDBOX_DEVICES: &[DeviceRule] = &[
    (false, LinuxDeviceType::A, None, None, "rwm"),
    (true, LinuxDeviceType::C, None, None, "m"),
    (true, LinuxDeviceType::B, None, None, "m"),
    (true, LinuxDeviceType::C, Some(1), Some(3), "rwm"), // null
    (true, LinuxDeviceType::C, Some(1), Some(5), "rwm"), // zero
    (true, LinuxDeviceType::C, Some(1), Some(7), "rwm"), // full
    (true, LinuxDeviceType::C, Some(1), Some(8), "rwm"), // random
    (true, LinuxDeviceType::C, Some(1), Some(9), "rwm"), // urandom
    (true, LinuxDeviceType::C, Some(5), Some(0), "rwm"), // tty
    (true, LinuxDeviceType::C, Some(5), Some(2), "rwm"), // ptmx
    (true, LinuxDeviceType::C, Some(136), None, "rwm"),  // pts
    (true, LinuxDeviceType::C, Some(10), Some(200), "rwm"), // tun
];

/// The device rules for a step: the sandbox list, or every device for
/// `--security=insecure` (Docker's `--privileged`). Written out because crun,
/// unlike runc, adds no defaults of its own.
pub fn device_rules(insecure: bool) -> Result<Vec<LinuxDeviceCgroup>, ExecError> {
    let all = [(true, LinuxDeviceType::A, None, None, "rwm")];
    let rules: &[DeviceRule] = if insecure { &all } else { SANDBOX_DEVICES };
    rules
        .iter()
        .map(|(allow, typ, major, minor, access)| {
            let mut b = LinuxDeviceCgroupBuilder::default()
                .allow(*allow)
                .typ(*typ)
                .access(access.to_string());
            if let Some(m) = major {
                b = b.major(*m);
            }
            if let Some(m) = minor {
                b = b.minor(*m);
            }
            b.build().map_err(invalid)
        })
        .collect()
}

fn invalid(e: impl std::fmt::Display) -> ExecError {
    ExecError::Invalid(format!("building the OCI spec: {e}"))
}

fn mount(
    dest: &str,
    typ: &str,
    source: impl Into<PathBuf>,
    opts: &[&str],
) -> Result<Mount, ExecError> {
    MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source.into())
        .options(opts.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
        .map_err(invalid)
}

/// The spec mounts for one world mount.
pub fn spec_mounts(m: &ContainerMount) -> Result<Vec<Mount>, ExecError> {
    let d = m.destination.as_str();
    Ok(match &m.kind {
        MountKind::Proc => vec![mount(d, "proc", "proc", &["nosuid", "noexec", "nodev"])?],
        MountKind::Dev => vec![
            mount(
                d,
                "tmpfs",
                "tmpfs",
                &["nosuid", "strictatime", "mode=755", "size=65536k"],
            )?,
            mount(
                &format!("{d}/pts"),
                "devpts",
                "devpts",
                &[
                    "nosuid",
                    "noexec",
                    "newinstance",
                    "ptmxmode=0666",
                    "mode=0620",
                ],
            )?,
            mount(
                &format!("{d}/shm"),
                "tmpfs",
                "shm",
                &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
            )?,
        ],
        MountKind::Sysfs { readonly } => vec![mount(
            d,
            "sysfs",
            "sysfs",
            &[
                "nosuid",
                "noexec",
                "nodev",
                if *readonly { "ro" } else { "rw" },
            ],
        )?],
        MountKind::Bind { source, readonly } => vec![mount(
            d,
            "bind",
            source.clone(),
            &["rbind", if *readonly { "ro" } else { "rw" }],
        )?],
        MountKind::Tmpfs { size, mode } => {
            let mode = format!("mode={mode:o}");
            let size = size.map(|s| format!("size={s}"));
            let mut opts = vec!["nosuid", "nodev", mode.as_str()];
            if let Some(s) = &size {
                opts.push(s);
            }
            vec![mount(d, "tmpfs", "tmpfs", &opts)?]
        }
    })
}

/// Builds the runtime spec for `world`.
pub fn build_spec(world: &World) -> Result<Spec, ExecError> {
    let insecure = world.security == SecurityMode::Insecure;
    let caps: HashSet<Capability> = cap_names(insecure)
        .into_iter()
        .filter_map(|n| n.parse::<Capability>().ok())
        .collect();
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .inheritable(HashSet::new())
        .ambient(HashSet::new())
        .build()
        .map_err(invalid)?;
    let user = UserBuilder::default()
        .uid(world.user.uid)
        .gid(world.user.gid)
        .additional_gids(world.user.additional_gids.clone())
        .build()
        .map_err(invalid)?;
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(user)
        .args(world.args.clone())
        .env(world.env.clone())
        .cwd(world.cwd.clone())
        .capabilities(capabilities)
        .no_new_privileges(!insecure)
        .build()
        .map_err(invalid)?;

    let mut ns = vec![
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
    ];
    if world.network.isolated() {
        ns.push(LinuxNamespaceType::Network);
    }
    let namespaces = ns
        .into_iter()
        .map(|t| {
            let b = LinuxNamespaceBuilder::default().typ(t);
            match (&world.netns, t) {
                (Some(path), LinuxNamespaceType::Network) => b.path(path.clone()),
                _ => b,
            }
            .build()
            .map_err(invalid)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut linux = LinuxBuilder::default().namespaces(namespaces);
    let (masked, readonly): (&[&str], &[&str]) = if insecure {
        (&[], &[])
    } else {
        (MASKED_PATHS, READONLY_PATHS)
    };
    linux = linux
        .masked_paths(masked.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .readonly_paths(readonly.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    let resources = LinuxResourcesBuilder::default()
        .devices(device_rules(insecure)?)
        .build()
        .map_err(invalid)?;
    linux = linux.resources(resources);
    // Docker's default profile; `--security=insecure` runs unconfined.
    if !insecure {
        linux = linux.seccomp(super::seccomp::sandbox_profile().clone());
    }
    let linux = linux.build().map_err(invalid)?;

    let mut mounts = Vec::new();
    for m in &world.mounts {
        mounts.extend(spec_mounts(m)?);
    }
    SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path(world.rootfs.clone())
                .readonly(false)
                .build()
                .map_err(invalid)?,
        )
        .hostname(world.hostname.clone())
        .process(process)
        .mounts(mounts)
        .linux(linux)
        .build()
        .map_err(invalid)
}

/// Writes `config.json` into `bundle` (created when missing).
pub fn write_bundle(bundle: &Path, spec: &Spec) -> Result<(), ExecError> {
    std::fs::create_dir_all(bundle).map_err(ExecError::setup("creating the bundle"))?;
    spec.save(bundle.join("config.json"))
        .map_err(|e| ExecError::Invalid(format!("writing config.json: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::user::ResolvedUser;
    use crate::executor::NetworkMode;

    fn world(network: NetworkMode, security: SecurityMode) -> World {
        World {
            id: "t".into(),
            run_dir: "/run/t".into(),
            rootfs: "/run/t/rootfs".into(),
            args: vec!["sh".into(), "-c".into(), "true".into()],
            env: vec!["PATH=/bin".into()],
            cwd: "/work".into(),
            user: ResolvedUser {
                uid: 1000,
                gid: 1000,
                additional_gids: vec![10],
                home: "/home/app".into(),
            },
            hostname: "box".into(),
            mounts: vec![
                ContainerMount {
                    destination: "/dev".into(),
                    kind: MountKind::Dev,
                },
                ContainerMount {
                    destination: "/cache".into(),
                    kind: MountKind::Bind {
                        source: "/state/cache-mounts/x".into(),
                        readonly: false,
                    },
                },
            ],
            network,
            netns: None,
            security,
        }
    }

    #[test]
    fn sandbox_spec_has_default_caps_nnp_and_no_netns() {
        let spec = build_spec(&world(NetworkMode::Host, SecurityMode::Sandbox)).unwrap();
        let json = serde_json::to_value(&spec).unwrap();
        let p = &json["process"];
        assert_eq!(p["user"]["uid"], 1000);
        assert_eq!(p["user"]["additionalGids"][0], 10);
        assert_eq!(p["noNewPrivileges"], true);
        assert_eq!(p["cwd"], "/work");
        let eff = p["capabilities"]["effective"].as_array().unwrap();
        assert_eq!(eff.len(), 14);
        assert!(eff.iter().any(|c| c == "CAP_CHOWN"));
        assert!(!eff.iter().any(|c| c == "CAP_SYS_ADMIN"));
        let ns: Vec<_> = json["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap().to_string())
            .collect();
        assert!(!ns.contains(&"network".to_string()));
        assert!(ns.contains(&"pid".to_string()));
        assert_eq!(json["hostname"], "box");
        let dests: Vec<_> = json["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["destination"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(dests, vec!["/dev", "/dev/pts", "/dev/shm", "/cache"]);
        assert_eq!(json["mounts"][3]["options"][1], "rw");
        assert!(json["linux"]["maskedPaths"].is_array());
        let devices = json["linux"]["resources"]["devices"].as_array().unwrap();
        assert_eq!(
            devices[0],
            serde_json::json!({"allow": false, "type": "a", "access": "rwm"})
        );
        assert!(devices.contains(
            &serde_json::json!({"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"})
        ));
        assert!(devices.contains(
            &serde_json::json!({"allow": true, "type": "c", "major": 136, "access": "rwm"})
        ));
        assert_eq!(devices.len(), SANDBOX_DEVICES.len());
        let seccomp = &json["linux"]["seccomp"];
        assert_eq!(seccomp["defaultAction"], "SCMP_ACT_ERRNO");
        assert!(seccomp["syscalls"][0]["names"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("execve")));
    }

    #[test]
    fn default_network_joins_the_prepared_namespace() {
        let mut w = world(NetworkMode::Default, SecurityMode::Sandbox);
        w.netns = Some("/run/t/netns".into());
        let json = serde_json::to_value(build_spec(&w).unwrap()).unwrap();
        assert!(json["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!({"type": "network", "path": "/run/t/netns"})));
    }

    #[test]
    fn insecure_and_none_network() {
        let spec = build_spec(&world(NetworkMode::None, SecurityMode::Insecure)).unwrap();
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["process"]["noNewPrivileges"], false);
        let eff = json["process"]["capabilities"]["effective"]
            .as_array()
            .unwrap();
        assert!(eff.iter().any(|c| c == "CAP_SYS_ADMIN"));
        assert!(json["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["type"] == "network"));
        assert_eq!(json["linux"]["maskedPaths"], serde_json::json!([]));
        assert!(json["linux"]["seccomp"].is_null(), "insecure is unconfined");
        assert_eq!(
            json["linux"]["resources"]["devices"],
            serde_json::json!([{"allow": true, "type": "a", "access": "rwm"}])
        );
    }
}
