//! The wrapper sits on every runc call an engine makes, so it skips the std runtime's start-up
//! (`no_main`: no stack-guard probing of /proc/self/maps, no signal-stack set-up); std itself
//! works as usual.
#![no_main]

#[unsafe(no_mangle)]
extern "C" fn main(
    _argc: std::ffi::c_int,
    _argv: *const *const std::ffi::c_char,
) -> std::ffi::c_int {
    oci_volume_hook::wrapper::main()
}
