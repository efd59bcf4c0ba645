//! Geometry of a volume derived from its backing device.
//!
//! A stacked volume must never accept an I/O its backing device cannot take: its logical block
//! size is at least the backing device's, its capacity is the backing device's, and discard or
//! write-zeroes are offered only when the backing device offers them.

/// Sector size used by the block layer for all addresses.
pub const SECTOR_SIZE: u64 = 512;

/// Sectors in a 4 KiB page: the smallest maximum request size the block layer accepts.
const PAGE_SECTORS: u32 = 8;

/// What the volume needs to know about its backing device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backing {
    /// Capacity in 512-byte sectors.
    pub sectors: u64,
    /// Logical block size in bytes.
    pub logical_block_size: u32,
    /// Physical block size in bytes.
    pub physical_block_size: u32,
    /// Largest discard, in sectors; 0 when the device has no discard.
    pub max_discard_sectors: u32,
    /// Discard granularity in bytes.
    pub discard_granularity: u32,
    /// Largest write-zeroes, in sectors; 0 when unsupported.
    pub max_write_zeroes_sectors: u32,
    /// Largest request the device takes, in sectors.
    pub max_hw_sectors: u32,
}

/// The limits the volume advertises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Capacity in 512-byte sectors.
    pub sectors: u64,
    /// Logical block size in bytes.
    pub logical_block_size: u32,
    /// Physical block size in bytes.
    pub physical_block_size: u32,
    /// Largest discard in sectors (0: none).
    pub max_discard_sectors: u32,
    /// Discard granularity in bytes.
    pub discard_granularity: u32,
    /// Largest write-zeroes in sectors (0: none).
    pub max_write_zeroes_sectors: u32,
    /// Largest request in sectors: the backing device's, at least one page and a whole number
    /// of logical blocks.
    pub max_hw_sectors: u32,
}

/// Why a backing device cannot carry a volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeometryError {
    /// The device has no capacity.
    ZeroSize,
    /// A block size outside 512..=4096 or not a power of two.
    BadBlockSize,
    /// The capacity is not a whole number of logical blocks.
    Unaligned,
}

impl GeometryError {
    /// A short human explanation.
    pub fn describe(&self) -> &'static str {
        match self {
            GeometryError::ZeroSize => "the backing device has size 0",
            GeometryError::BadBlockSize => {
                "the backing device's block size is not a power of two in 512..=4096"
            }
            GeometryError::Unaligned => {
                "the backing device's size is not a multiple of its logical block size"
            }
        }
    }
}

fn valid_block_size(bs: u32) -> bool {
    (512..=4096).contains(&bs) && bs.is_power_of_two()
}

/// Derives the volume's limits from its backing device.
pub fn limits_for(b: &Backing) -> Result<Limits, GeometryError> {
    if b.sectors == 0 {
        return Err(GeometryError::ZeroSize);
    }
    if !valid_block_size(b.logical_block_size) {
        return Err(GeometryError::BadBlockSize);
    }
    let lbs_sectors = u64::from(b.logical_block_size) / SECTOR_SIZE;
    if !b.sectors.is_multiple_of(lbs_sectors) {
        return Err(GeometryError::Unaligned);
    }
    // A physical block size the block layer would refuse is replaced by the logical one.
    let pbs = if valid_block_size(b.physical_block_size)
        && b.physical_block_size >= b.logical_block_size
    {
        b.physical_block_size
    } else {
        b.logical_block_size
    };
    let discard = b.max_discard_sectors > 0;
    Ok(Limits {
        sectors: b.sectors,
        logical_block_size: b.logical_block_size,
        physical_block_size: pbs,
        max_discard_sectors: b.max_discard_sectors,
        discard_granularity: if discard {
            b.discard_granularity.max(b.logical_block_size)
        } else {
            0
        },
        max_write_zeroes_sectors: b.max_write_zeroes_sectors,
        max_hw_sectors: {
            let lbs = b.logical_block_size / SECTOR_SIZE as u32;
            let floor = (PAGE_SECTORS).max(lbs);
            let m = b.max_hw_sectors.max(floor);
            m - m % lbs
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backing(sectors: u64, lbs: u32, pbs: u32) -> Backing {
        Backing {
            sectors,
            logical_block_size: lbs,
            physical_block_size: pbs,
            max_discard_sectors: 0,
            discard_granularity: 0,
            max_write_zeroes_sectors: 0,
            max_hw_sectors: 2560,
        }
    }

    #[test]
    fn refuses_zero_and_odd_devices() {
        assert_eq!(
            limits_for(&backing(0, 512, 512)),
            Err(GeometryError::ZeroSize)
        );
        assert_eq!(
            limits_for(&backing(8, 1000, 512)),
            Err(GeometryError::BadBlockSize)
        );
        assert_eq!(
            limits_for(&backing(9, 4096, 4096)),
            Err(GeometryError::Unaligned)
        );
    }

    #[test]
    fn copies_geometry() {
        let l = limits_for(&backing(1 << 20, 512, 4096)).unwrap();
        assert_eq!(
            (l.sectors, l.logical_block_size, l.physical_block_size),
            (1 << 20, 512, 4096)
        );
        assert_eq!(l.max_discard_sectors, 0);
        assert_eq!(l.discard_granularity, 0);
    }

    proptest::proptest! {
        #[test]
        fn limits_are_always_consistent(sectors in 0u64..1 << 40, lbs_shift in 8u32..14,
                                        pbs_shift in 8u32..14, disc in 0u32..1 << 20,
                                        gran in 0u32..1 << 20, maxhw in 0u32..1 << 16) {
            let b = Backing {
                sectors,
                logical_block_size: 1 << lbs_shift,
                physical_block_size: 1 << pbs_shift,
                max_discard_sectors: disc,
                discard_granularity: gran,
                max_write_zeroes_sectors: 0,
                max_hw_sectors: maxhw,
            };
            if let Ok(l) = limits_for(&b) {
                proptest::prop_assert!(l.max_hw_sectors >= 8);
                proptest::prop_assert_eq!(l.max_hw_sectors % (l.logical_block_size / 512), 0);
                proptest::prop_assert!(l.max_hw_sectors <= maxhw.max(8));
                proptest::prop_assert!(l.sectors > 0);
                proptest::prop_assert!(l.physical_block_size >= l.logical_block_size);
                proptest::prop_assert!(l.physical_block_size <= 4096);
                proptest::prop_assert_eq!(l.sectors * 512 % u64::from(l.logical_block_size), 0);
                if l.max_discard_sectors > 0 {
                    proptest::prop_assert!(l.discard_granularity >= l.logical_block_size);
                }
            }
        }
    }
}
