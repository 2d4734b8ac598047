//! The wrapper sits on every runc call an engine makes, so it skips the std runtime's start-up
//! (`no_main`: no stack-guard probing of /proc/self/maps, no signal-stack set-up); std itself
//! works as usual. (A test build keeps the harness's own main.)
#![cfg_attr(not(test), no_main)]

#[cfg(not(test))]
#[unsafe(no_mangle)]
extern "C" fn main(
    _argc: std::ffi::c_int,
    _argv: *const *const std::ffi::c_char,
) -> std::ffi::c_int {
    oci_volume_hook::wrapper::main()
}
