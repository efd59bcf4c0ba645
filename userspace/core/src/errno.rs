//! The Linux errno values peerflash gives a meaning to (asm-generic/errno-base.h), and the one
//! table of what a failed open of a volume's devices means: the module puts it in
//! `last_error`, the helper maps the numbers to its exit codes.

pub const ENOENT: i32 = 2;
pub const EIO: i32 = 5;
pub const ENXIO: i32 = 6;
pub const EACCES: i32 = 13;
pub const ENOTBLK: i32 = 15;
pub const EBUSY: i32 = 16;
pub const EEXIST: i32 = 17;
pub const ENODEV: i32 = 19;
pub const EINVAL: i32 = 22;
pub const ENOSPC: i32 = 28;
pub const EROFS: i32 = 30;

/// Which of a volume's devices an open was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Backing,
    Cache,
}

/// Why opening the `role` device failed with `errno` (positive), in words.
pub fn open_refusal(errno: i32, role: Role) -> &'static str {
    use Role::{Backing, Cache};
    match (errno, role) {
        (ENOENT, Backing) => "the backing device does not exist",
        (ENOENT, Cache) => "the cache device does not exist",
        (ENOTBLK, Backing) => "the backing path is not a block device",
        (ENOTBLK, Cache) => "the cache path is not a block device",
        (EBUSY, Backing) => "the backing device is in use (by another volume, a mounted filesystem or device-mapper)",
        (EBUSY, Cache) => "the cache device is in use (as a backing device, by a mounted filesystem or device-mapper)",
        (EACCES | EROFS, Backing) => "the backing device is read-only",
        (EACCES | EROFS, Cache) => "the cache device is read-only",
        (ENXIO | ENODEV, Backing) => "the backing device is not present",
        (ENXIO | ENODEV, Cache) => "the cache device is not present",
        (_, Backing) => "cannot open the backing device",
        (_, Cache) => "cannot open the cache device",
    }
}
