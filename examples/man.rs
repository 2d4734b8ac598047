//! Writes the binaries' manual pages, generated from their command-line definitions:
//! `cargo run --example man -- DIR` (tests/package.sh does, for the packages).

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(
        std::env::args_os()
            .nth(1)
            .unwrap_or_else(|| "target/man".into()),
    );
    std::fs::create_dir_all(&dir)?;
    for (stem, cmd) in oci_volume_hook::manual::pages(oci_volume_hook::hook::command()) {
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd).section("1").render(&mut page)?;
        std::fs::write(dir.join(format!("{stem}.1")), page)?;
    }
    Ok(())
}
