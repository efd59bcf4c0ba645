//! `pf-mark N` (N = 1 or 2): executes the marker instruction `nopl 0x0N4d4650(%rax)` (bytes
//! `0f 1f 80 50 46 4d 0N`), an architectural no-op that the project's QEMU plugin
//! (`tests/tools/insncount/pfinsns.c`) recognises: it logs the guest's instruction totals at that
//! moment. `tests/vm/bench.sh` runs `pf-mark 1` and `pf-mark 2` at the ends of a measurement
//! window. Without the plugin it does nothing.

use std::process::ExitCode;

fn main() -> ExitCode {
    let id = std::env::args().nth(1);
    match id.as_deref() {
        // SAFETY: a NOP with a memory operand that is never accessed (`nopl` does not read it);
        // it touches no register, flag or memory.
        Some("1") => unsafe {
            std::arch::asm!(".byte 0x0f, 0x1f, 0x80, 0x50, 0x46, 0x4d, 0x01", options(nomem, nostack, preserves_flags));
        },
        // SAFETY: as above.
        Some("2") => unsafe {
            std::arch::asm!(".byte 0x0f, 0x1f, 0x80, 0x50, 0x46, 0x4d, 0x02", options(nomem, nostack, preserves_flags));
        },
        _ => {
            eprintln!("usage: pf-mark 1|2 (the start or the end of a measurement window)");
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}
