//! The Dockerfiles moat generates from `dependencies:` (snapshots), and the
//! tag's independence from the order dependencies are written in.

use moat_core::deps::{DependencyError, plan_image};
use proptest::prelude::*;

const BASE: &str = "moat-base:bookworm";

fn dockerfile(deps: &[&str]) -> String {
    let deps: Vec<String> = deps.iter().map(|d| d.to_string()).collect();
    let context = plan_image(BASE, &deps, None).unwrap();
    format!("tag: {}\n{}", context.tag, context.dockerfile)
}

macro_rules! snapshot {
    ($name:ident, [$($dep:expr),* $(,)?]) => {
        #[test]
        fn $name() {
            insta::assert_snapshot!(dockerfile(&[$($dep),*]));
        }
    };
}

snapshot!(git_only, ["git"]);
snapshot!(python_sdk_and_git, ["python@3", "pip:anthropic", "git"]);
snapshot!(
    python_sdk_httpx_and_git,
    ["python@3", "pip:anthropic", "pip:httpx", "git"]
);
snapshot!(pinned_pip_packages, ["pip:requests==2.31.0", "pip:anthropic==0.40.0"]);
snapshot!(
    node_with_npm_packages,
    ["node@18", "npm:typescript@5.4.5", "npm:@types/node"]
);
snapshot!(claude_code, ["claude-code"]);
snapshot!(claude_code_pinned, ["claude-code@1.0.0", "git", "gh"]);
snapshot!(codex, ["codex"]);
snapshot!(go_and_rust, ["go", "rust@1.63"]);
snapshot!(uv_tool, ["uv", "python@3.11"]);
snapshot!(apt_packages, ["apt:ripgrep", "apt:jq=1.6-2.1+deb12u1"]);
snapshot!(
    everything,
    [
        "python",
        "node",
        "go",
        "rust",
        "git",
        "gh",
        "uv",
        "claude-code",
        "codex",
        "pip:httpx",
        "npm:prettier",
        "apt:jq"
    ]
);

#[test]
fn the_build_ca_is_copied_and_changes_the_tag() {
    let deps = vec!["git".to_string()];
    let plain = plan_image(BASE, &deps, None).unwrap();
    let with_ca = plan_image(BASE, &deps, Some(b"-----BEGIN CERTIFICATE-----\n")).unwrap();
    assert!(
        with_ca
            .dockerfile
            .contains("COPY build-ca.pem /usr/local/share/ca-certificates/")
    );
    assert!(with_ca.files.iter().any(|f| f.name == "build-ca.pem"));
    assert_ne!(plain.tag, with_ca.tag);
    assert!(plain.tag.starts_with("moat/run:") && plain.tag.len() == "moat/run:".len() + 16);
}

#[test]
fn adding_a_pip_package_changes_only_the_pip_layer_and_after() {
    let before = dockerfile(&["python@3", "pip:anthropic", "git"]);
    let after = dockerfile(&["python@3", "pip:anthropic", "pip:httpx", "git"]);
    let changed: Vec<_> = before.lines().zip(after.lines()).filter(|(a, b)| a != b).collect();
    assert_eq!(changed.len(), 2, "{changed:#?}"); // the tag and the pip line
    assert!(changed[1].1.contains("pip install") && changed[1].1.contains("httpx"));
}

#[test]
fn bad_dependencies_fail_before_any_build() {
    let plan = |deps: &[&str]| plan_image(BASE, &deps.iter().map(|d| d.to_string()).collect::<Vec<_>>(), None);
    assert!(matches!(plan(&["pyton"]), Err(DependencyError::Unknown { .. })));
    assert!(matches!(plan(&["python@2.7"]), Err(DependencyError::Version { .. })));
    assert!(matches!(plan(&["pip:bad name"]), Err(DependencyError::Malformed(..))));
}

const POOL: &[&str] = &[
    "python@3",
    "node",
    "git",
    "gh",
    "go",
    "rust",
    "uv",
    "claude-code",
    "codex",
    "pip:anthropic",
    "pip:httpx==0.27.0",
    "npm:typescript",
    "apt:jq",
    "apt:ripgrep",
];

/// A subset of [`POOL`] in its written order and the same subset shuffled.
fn subset_and_shuffle() -> impl Strategy<Value = (Vec<&'static str>, Vec<&'static str>)> {
    proptest::sample::subsequence(POOL.to_vec(), 1..POOL.len())
        .prop_flat_map(|picked| (Just(picked.clone()), Just(picked).prop_shuffle()))
}

proptest! {
    #[test]
    fn the_tag_does_not_depend_on_the_order((picked, shuffled) in subset_and_shuffle(), duplicate in any::<bool>()) {
        let deps: Vec<String> = picked.iter().map(|d| d.to_string()).collect();
        let mut reordered: Vec<String> = shuffled.iter().map(|d| d.to_string()).collect();
        if duplicate {
            reordered.push(reordered[0].clone());
        }
        let a = plan_image(BASE, &deps, None).unwrap();
        let b = plan_image(BASE, &reordered, None).unwrap();
        prop_assert_eq!(a.tag, b.tag);
        prop_assert_eq!(a.dockerfile, b.dockerfile);
    }
}

fn hooks(root: Option<&str>, user_hook: Option<&str>, user: &str) -> moat_core::deps::BuildHooks {
    moat_core::deps::BuildHooks {
        post_build_root: root.map(str::to_string),
        post_build: user_hook.map(str::to_string),
        user: user.to_string(),
    }
}

#[test]
fn build_hooks_are_the_last_layers_before_the_init() {
    let deps = vec!["git".to_string()];
    let context =
        moat_core::deps::plan_build(BASE, &deps, &hooks(Some("make root"), Some("make"), "1000:1000"), None).unwrap();
    insta::assert_snapshot!(format!("tag: {}\n{}", context.tag, context.dockerfile));
    let names: Vec<&str> = context.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "Dockerfile",
            "hook-post_build_root.sh",
            "hook-post_build.sh",
            "moat-init"
        ]
    );
    assert_eq!(context.files[2].contents, b"make");
}

#[test]
fn the_hooks_text_and_the_user_of_post_build_change_the_tag() {
    let tag = |h: &moat_core::deps::BuildHooks| moat_core::deps::plan_build(BASE, &[], h, None).unwrap().tag;
    let plain = plan_image(BASE, &[], None).unwrap().tag;
    let root_only = tag(&hooks(Some("make"), None, "1000:1000"));
    assert_ne!(root_only, plain);
    assert_ne!(tag(&hooks(Some("make all"), None, "1000:1000")), root_only);
    assert_eq!(
        tag(&hooks(Some("make"), None, "2000:2000")),
        root_only,
        "without post_build the run's user is not part of the image"
    );
    let user = tag(&hooks(None, Some("make"), "1000:1000"));
    assert_ne!(tag(&hooks(None, Some("make"), "2000:2000")), user);
    assert_ne!(user, root_only, "the same text as another hook is another image");
}

#[test]
fn a_failing_hook_is_read_from_its_last_line() {
    use moat_core::deps::HookFailure;
    assert_eq!(
        HookFailure::parse("moat: hooks.post_build exited 7"),
        Some(HookFailure {
            hook: "hooks.post_build".into(),
            code: 7
        })
    );
    // The engine may begin the line with the reset of a red stderr line.
    assert_eq!(
        HookFailure::parse("\u{1b}[0mmoat: hooks.post_build_root exited 3"),
        Some(HookFailure {
            hook: "hooks.post_build_root".into(),
            code: 3
        })
    );
    assert!(HookFailure::parse("\u{1b}[0xmoat: hooks.post_build exited 3").is_none());
    assert!(HookFailure::parse("moat: hooks.pre_run exited 7").is_none());
    assert!(HookFailure::parse("Step 9/12 : RUN echo \"moat: hooks.post_build exited $code\"").is_none());
}
