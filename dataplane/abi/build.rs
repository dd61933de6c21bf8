//! Compiles the eBPF programs in ../ebpf with clang-19 and generates the
//! ABI layout assertions (see ebpf/abi_layout.c).
use std::{env, path::PathBuf, process::Command};

fn clang() -> String {
    env::var("CORRAL_CLANG").unwrap_or_else(|_| "clang-19".to_string())
}

fn run(cmd: &mut Command, what: &str) -> Vec<u8> {
    let out = match cmd.output() {
        Ok(o) => o,
        Err(e) => panic!("{what}: cannot run {cmd:?}: {e} (install clang-19 and libbpf-dev)"),
    };
    if !out.status.success() {
        panic!(
            "{what} failed: {cmd:?}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out.stdout
}

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let ebpf = manifest.join("../../ebpf");
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    for f in [
        "corral.bpf.c",
        "corral_lb.h",
        "corral_pkt.h",
        "corral_abi.h",
        "abi_layout.c",
    ] {
        println!("cargo:rerun-if-changed={}", ebpf.join(f).display());
    }
    println!("cargo:rerun-if-env-changed=CORRAL_CLANG");

    let obj = out.join("corral.bpf.o");
    run(
        Command::new(clang())
            .args(["-target", "bpf", "-O2", "-g", "-Wall", "-Werror"])
            .arg("-I/usr/include/x86_64-linux-gnu")
            .arg("-c")
            .arg(ebpf.join("corral.bpf.c"))
            .arg("-o")
            .arg(&obj),
        "compiling ebpf/corral.bpf.c",
    );

    let layout_bin = out.join("abi_layout");
    run(
        Command::new(clang())
            .args(["-O0", "-Wall", "-Werror"])
            .arg(format!("-I{}", ebpf.display()))
            .arg(ebpf.join("abi_layout.c"))
            .arg("-o")
            .arg(&layout_bin),
        "compiling ebpf/abi_layout.c",
    );
    let asserts = run(&mut Command::new(&layout_bin), "running abi_layout");
    // one block expression so that include!() accepts many statements
    let mut code = b"{\n".to_vec();
    code.extend_from_slice(&asserts);
    code.extend_from_slice(b"}\n");
    std::fs::write(out.join("abi_layout.rs"), code).expect("write abi_layout.rs");
}
