fn main() -> std::process::ExitCode {
    oci_volume_hook::wrapper::main()
}
