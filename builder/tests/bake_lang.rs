//! The bake language against buildx: `try`/`can`, typed variables from the environment
//! (CSV and `NAME_JSON`), the newer standard functions, object forms of the structured
//! attributes, every target attribute in `--print` (expected JSON written from buildx's
//! `Target` JSON tags and `buildflags` marshalling), and evaluation errors with positions.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::kiln_bin;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/bake")
        .join(name)
}

/// Variables the fixtures read, removed so the caller's environment cannot leak in.
const FIXTURE_VARS: &[&str] = &[
    "PLATFORMS",
    "PLATFORMS_JSON",
    "SETTINGS",
    "SETTINGS_JSON",
    "VERSION",
    "CONFIG",
    "CONFIG_JSON",
];

fn bake(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(kiln_bin());
    for v in FIXTURE_VARS {
        cmd.env_remove(v);
    }
    cmd.arg("bake")
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .output()
        .expect("run kiln bake")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `--print` as JSON; fails the test with stderr when kiln fails.
fn print(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> serde_json::Value {
    let mut all = vec!["--print"];
    all.extend_from_slice(args);
    let out = bake(dir, &all, env);
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("--print is not JSON ({e}): {}", text(&out.stdout)))
}

#[test]
fn print_shows_every_attribute_as_buildx_does() {
    let dir = fixture("lang");
    let got = print(&dir, &[], &[]);
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    assert_eq!(
        got,
        want,
        "--print differs:\n{}",
        serde_json::to_string_pretty(&got).unwrap()
    );
}

#[test]
fn print_orders_attributes_as_buildx_and_escapes_as_go() {
    let d = bake_file(
        "docker-bake.hcl",
        "target \"a\" {\n  tags = [\"x\"]\n  args = { Q = \"<a&b>\" }\n  description = \"d\"\n  platforms = [\"linux/arm64\"]\n}\n",
    );
    let out = bake(d.path(), &["--print", "a"], &[]);
    let s = text(&out.stdout);
    // Fields follow buildx's `Target` struct, not the file or the alphabet.
    let at = |k: &str| {
        s.find(&format!("\"{k}\""))
            .unwrap_or_else(|| panic!("{k}: {s}"))
    };
    assert!(at("description") < at("context"), "{s}");
    assert!(
        at("context") < at("dockerfile") && at("dockerfile") < at("args"),
        "{s}"
    );
    assert!(
        at("args") < at("tags") && at("tags") < at("platforms"),
        "{s}"
    );
    // Go's encoder escapes HTML characters.
    assert!(s.contains(r#""Q": "\u003ca\u0026b\u003e""#), "{s}");
}

#[test]
fn typed_variables_read_csv_and_json_from_the_environment() {
    let dir = fixture("lang");
    let got = print(
        &dir,
        &["app"],
        &[
            ("PLATFORMS", "linux/amd64,linux/arm64"),
            ("SETTINGS_JSON", r#"{"debug": true, "level": "3"}"#),
            // A typed variable prefers NAME_JSON over NAME.
            ("SETTINGS", "ignored"),
            ("VERSION", "v2.0.1"),
        ],
    );
    let app = &got["target"]["app"];
    assert_eq!(
        app["platforms"],
        serde_json::json!(["linux/amd64", "linux/arm64"])
    );
    assert_eq!(app["args"]["DEBUG"], "true");
    assert_eq!(app["args"]["LEVEL"], "3");
    assert_eq!(app["args"]["MODERN"], "false");
    // An untyped variable whose default is an object cannot come from the environment.
    let out = bake(&dir, &["--print", "app"], &[("CONFIG", "x")]);
    let err = text(&out.stderr);
    assert!(
        err.contains("docker-bake.hcl:19:1") && err.contains("no type is given"),
        "{err}"
    );

    // A JSON value that does not fit the type, and a default that does not.
    let out = bake(
        &dir,
        &["--print", "app"],
        &[("SETTINGS_JSON", r#"{"debug": 1}"#)],
    );
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("docker-bake.hcl:9:1") && err.contains("SETTINGS_JSON"),
        "{err}"
    );
    let d = bake_file(
        "docker-bake.hcl",
        "variable \"N\" {\n  type    = list(number)\n  default = [\"x\"]\n}\ntarget \"a\" {}\n",
    );
    let out = bake(d.path(), &["--print"], &[]);
    let err = text(&out.stderr);
    assert!(
        err.contains("docker-bake.hcl:3:3") && err.contains("invalid type list of number"),
        "{err}"
    );
}

#[test]
fn try_and_can_inside_loops_templates_and_functions() {
    let d = bake_file(
        "docker-bake.hcl",
        r#"
variable "MAP" {
  default = { a = "1" }
}
function "get" {
  params = [key]
  result = try(MAP[key], "-")
}
target "t" {
  tags = [for k in ["a", "b"] : "img:${k}-${try(MAP[k], "none")}"]
  args = {
    VIA_FUNC = "${get("a")}${get("z")}"
    CAN      = "${can(MAP.a)}/${can(MAP.b)}"
    NESTED   = try(try(MAP.x, MAP.y), MAP.a)
  }
}
"#,
    );
    let got = print(d.path(), &["t"], &[]);
    let t = &got["target"]["t"];
    assert_eq!(t["tags"], serde_json::json!(["img:a-1", "img:b-none"]));
    assert_eq!(t["args"]["VIA_FUNC"], "1-");
    assert_eq!(t["args"]["CAN"], "true/false");
    assert_eq!(t["args"]["NESTED"], "1");
}

/// A bake file in a fresh directory; returns the directory.
fn bake_file(name: &str, text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(name), text).unwrap();
    dir
}

fn fails_with(dir: &Path, needles: &[&str]) {
    let out = bake(dir, &["--print"], &[]);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "should fail");
    for n in needles {
        assert!(err.contains(n), "expected {n:?} in: {err}");
    }
}

#[test]
fn evaluation_errors_name_file_line_and_column() {
    // An unknown function.
    let d = bake_file(
        "docker-bake.hcl",
        "target \"a\" {\n  tags = [nosuchfunc(\"x\")]\n}\n",
    );
    fails_with(
        d.path(),
        &["docker-bake.hcl:2:3", "attribute \"tags\"", "nosuchfunc"],
    );
    // A value of the wrong type.
    let d = bake_file(
        "docker-bake.hcl",
        "target \"a\" {\n  dockerfile = \"x\"\n  platforms = { a = 1 }\n}\n",
    );
    fails_with(
        d.path(),
        &[
            "docker-bake.hcl:3:3",
            "attribute \"platforms\"",
            "list of strings",
        ],
    );
    // A function given the wrong argument.
    let d = bake_file(
        "docker-bake.hcl",
        "target \"a\" {\n  args = {\n    X = cidrsubnet(\"10.0.0.0/30\", 4, 0)\n  }\n}\n",
    );
    fails_with(d.path(), &["docker-bake.hcl:2:3", "cidrsubnet"]);
    // An unknown variable, in a variable and in a target.
    let d = bake_file(
        "docker-bake.hcl",
        "variable \"A\" {\n  default = \"${NOPE}-x\"\n}\ntarget \"a\" {}\n",
    );
    fails_with(d.path(), &["docker-bake.hcl:2:3", "\"NOPE\""]);
    let d = bake_file(
        "docker-bake.hcl",
        "target \"a\" {\n\n    tags = [UNDEF]\n}\n",
    );
    fails_with(d.path(), &["docker-bake.hcl:3:5", "UNDEF"]);
    // try cannot hide a variable that does not exist, as in HCL.
    let d = bake_file(
        "docker-bake.hcl",
        "target \"a\" {\n  tags = [try(MISSING, \"x\")]\n}\n",
    );
    fails_with(d.path(), &["docker-bake.hcl:2:3", "MISSING"]);
    // A cycle in inherits, and in variables.
    let d = bake_file(
        "docker-bake.hcl",
        "group \"default\" {\n  targets = [\"a\"]\n}\ntarget \"a\" {\n  inherits = [\"b\"]\n}\ntarget \"b\" {\n  inherits = [\"c\"]\n}\ntarget \"c\" {\n  inherits = [\"a\"]\n}\n",
    );
    fails_with(d.path(), &["inherits cycle: a -> b -> c -> a"]);
    let d = bake_file(
        "docker-bake.hcl",
        "variable \"A\" {\n  default = B\n}\nvariable \"B\" {\n  default = A\n}\ntarget \"a\" {}\n",
    );
    fails_with(d.path(), &["variable cycle"]);
    // A bad type expression.
    let d = bake_file(
        "docker-bake.hcl",
        "variable \"A\" {\n  type = lst(string)\n}\ntarget \"a\" {}\n",
    );
    fails_with(d.path(), &["docker-bake.hcl:2:3", "is not a type"]);
}
