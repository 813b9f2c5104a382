//! Compiles the recorder's BPF program (C, clang-14) and generates its libbpf-rs skeleton.
use std::path::PathBuf;

fn main() {
    let src = "src/bpf/recorder.bpf.c";
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR")).join("recorder.skel.rs");
    let clang = std::env::var("SSI_BPF_CLANG").unwrap_or_else(|_| "clang-14".into());
    libbpf_cargo::SkeletonBuilder::new()
        .source(src)
        .clang(&clang)
        // The BPF target has no multiarch include directory of its own (asm/ headers).
        .clang_args(["-I/usr/include/x86_64-linux-gnu", "-Wall", "-O2"])
        .build_and_generate(&out)
        .unwrap_or_else(|e| panic!("building {src} with {clang} (apt: clang-14 libelf-dev zlib1g-dev pkg-config): {e:#}"));
    println!("cargo:rerun-if-changed={src}");
    println!("cargo:rerun-if-env-changed=SSI_BPF_CLANG");
}
