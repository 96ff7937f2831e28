//! Builds with hundreds of RUN steps (issue 17): more layers than overlayfs stacks
//! (500 lower dirs) still build, each step sees every earlier step's changes
//! (whiteouts and replaced directories included), and the image keeps every layer.
//! Checked with umoci (not kiln) and a local export.

mod support;

use support::{executed, Build, TestEnv};

/// RUN steps past overlayfs' 500-lower-dir limit.
const STEPS: usize = 510;

fn dockerfile(base: &str) -> String {
    let mut df = format!("FROM {base}\n");
    for i in 1..=STEPS {
        df.push_str(&match i {
            // A whiteout deep in the chain (flattened away later), and a directory
            // removed and made again (an opaque directory in its layer).
            5 => "RUN rm /f3 && mkdir /d && echo a > /d/a\n".to_string(),
            40 => "RUN rm -r /d && mkdir /d && echo b > /d/b\n".to_string(),
            // The last step reads what the first ones did.
            STEPS => {
                "RUN test ! -e /f3 && test ! -e /d/a && cat /f1 /d/b /f509 > /check\n".to_string()
            }
            _ => format!("RUN echo {i} > /f{i}\n"),
        });
    }
    df
}

#[test]
fn a_build_of_510_run_steps_has_every_file_and_layer() {
    let env = TestEnv::load();
    let b = Build::new();
    let base = format!("{}/library/busybox:latest", env.registry());
    b.write("Dockerfile", &dockerfile(&base));
    let tag = "kiln-test/steps-many:1";
    let meta = b.build(&["-t", tag]);
    assert!(executed(&meta) >= STEPS as u64, "{meta}");

    let rootfs = b.unpack(&format!("docker.io/{tag}"));
    let read =
        |p: &str| std::fs::read_to_string(rootfs.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    assert_eq!(read("check"), "1\nb\n509\n");
    assert_eq!(read("f6"), "6\n");
    assert_eq!(read("f509"), "509\n");
    assert!(!rootfs.join("f3").exists() && !rootfs.join("d/a").exists());
    assert!(rootfs.join("bin/sh").exists(), "the base image's files");
    // Every step is a layer of its own, as in BuildKit's image.
    let name = format!("docker.io/{tag}");
    let layers = b.config(&name)["rootfs"]["diff_ids"]
        .as_array()
        .expect("diff_ids")
        .len();
    assert!(layers > STEPS, "{layers} layers");
    assert_eq!(
        b.manifest(&name)["layers"].as_array().unwrap().len(),
        layers
    );

    // Exporting the files mounts the whole chain (more than overlayfs stacks) once.
    let out = b.path("out");
    let again = b.build(&["-o", &format!("type=local,dest={}", out.display())]);
    assert_eq!(executed(&again), 0, "all from the cache: {again}");
    assert_eq!(
        std::fs::read_to_string(out.join("check")).unwrap(),
        "1\nb\n509\n"
    );
    assert!(out.join("f508").exists() && !out.join("f3").exists());
}
