//! The committed generated code must match the .proto files. To regenerate after editing them:
//! `FLEET_PROTO_BLESS=1 cargo test -p fleet-proto --test codegen`.

use std::path::{Path, PathBuf};

fn generate(out: &Path) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("proto");
    let fds = protox::compile(["scorecard/fleet/v1/fleet.proto"], [&root]).expect("compile .proto");
    let descriptors = prost::Message::encode_to_vec(&fds);
    prost_build::Config::new()
        .out_dir(out)
        .compile_well_known_types()
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_fds(fds)
        .expect("prost-build");
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)
        .expect("descriptors")
        .out_dir(out)
        .build(&[".scorecard"])
        .expect("pbjson-build");
}

#[test]
fn generated_code_matches_proto_files() {
    let committed = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/gen");
    let fresh = std::env::temp_dir().join(format!("fleet-proto-gen-{}", std::process::id()));
    std::fs::create_dir_all(&fresh).unwrap();
    generate(&fresh);
    let bless = std::env::var_os("FLEET_PROTO_BLESS").is_some();
    let mut drifted = Vec::new();
    for name in ["scorecard.fleet.v1.rs", "scorecard.fleet.v1.serde.rs"] {
        let new = std::fs::read_to_string(fresh.join(name)).unwrap();
        let old = std::fs::read_to_string(committed.join(name)).unwrap_or_default();
        if new != old {
            if bless {
                std::fs::write(committed.join(name), &new).unwrap();
            } else {
                drifted.push(name);
            }
        }
    }
    std::fs::remove_dir_all(&fresh).ok();
    assert!(
        drifted.is_empty(),
        "src/gen/{drifted:?} drifted from proto/: run FLEET_PROTO_BLESS=1 cargo test -p fleet-proto --test codegen"
    );
}
