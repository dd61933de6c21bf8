//! corral-cni: CNI 1.1.0 plugin binary. Reads CNI_* from the environment
//! and the network config from stdin; prints only the result (or the
//! error JSON) on stdout.

use std::io::{Read, Write};

fn main() {
    let env: std::collections::HashMap<String, String> = std::env::vars().collect();
    let mut stdin = Vec::new();
    let command = env.get("CNI_COMMAND").map(String::as_str).unwrap_or("");
    // VERSION may come without stdin; everything else needs the config
    if command != "VERSION" || !atty_stdin() {
        // One byte over the limit is enough for the parser to report it.
        let max = corral_limits::MAX_CNI_CONFIG_BYTES as u64 + 1;
        let _ = std::io::stdin().take(max).read_to_end(&mut stdin);
    }
    let (out, code) = corral_cni::run(&env, &stdin);
    let mut so = std::io::stdout().lock();
    let _ = so.write_all(out.as_bytes());
    let _ = so.flush();
    std::process::exit(code);
}

fn atty_stdin() -> bool {
    rustix::termios::isatty(std::io::stdin())
}
