//! Geometry of a volume derived from its backing device.
//!
//! A stacked volume must never accept an I/O its backing device cannot take: its logical block
//! size is at least the backing device's, its capacity is the backing device's, and discard or
//! write-zeroes are offered only when the backing device offers them.

/// Sector size used by the block layer for all addresses.
pub const SECTOR_SIZE: u64 = 512;

/// Sectors in a 4 KiB page: the smallest maximum request size the block layer accepts.
const PAGE_SECTORS: u32 = 8;

/// What a block device reports, in the same terms as what the volume advertises ([`Limits`]).
pub type Backing = Limits;

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
    /// The capacity is not a whole number of the cache device's blocks.
    CacheUnaligned,
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
            GeometryError::CacheUnaligned => {
                "the backing device's size is not a multiple of the cache device's block size \
                 (the volume's blocks are at least the cache device's)"
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

/// The limits of a volume whose data is also kept on a cache device of `cache_block_size`-byte
/// blocks: every record on flash is a whole number of the cache device's blocks, so the
/// volume's logical block size is at least the cache device's (a 4Kn cache under a 512-byte
/// SAN gives a 4096-byte volume; the SAN takes such requests as they are). The capacity must
/// then be a whole number of those blocks.
pub fn with_cache_block(l: Limits, cache_block_size: u32) -> Result<Limits, GeometryError> {
    if !valid_block_size(cache_block_size) {
        return Err(GeometryError::BadBlockSize);
    }
    let lbs = l.logical_block_size.max(cache_block_size);
    let lbs_sectors = lbs / SECTOR_SIZE as u32;
    if !l.sectors.is_multiple_of(u64::from(lbs_sectors)) {
        return Err(GeometryError::CacheUnaligned);
    }
    let m = l.max_hw_sectors.max(lbs_sectors);
    Ok(Limits {
        logical_block_size: lbs,
        physical_block_size: l.physical_block_size.max(lbs),
        discard_granularity: if l.max_discard_sectors > 0 {
            l.discard_granularity.max(lbs)
        } else {
            0
        },
        max_hw_sectors: m - m % lbs_sectors,
        ..l
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

    #[test]
    fn a_4kn_cache_raises_the_volume_block_size() {
        let l = limits_for(&backing(1 << 20, 512, 512)).unwrap();
        let c = with_cache_block(l, 4096).unwrap();
        assert_eq!(
            (c.logical_block_size, c.physical_block_size),
            (4096, 4096)
        );
        // A 4 KiB SAN over a 512-byte cache keeps its own 4 KiB.
        let l = limits_for(&backing(1 << 20, 4096, 4096)).unwrap();
        assert_eq!(with_cache_block(l, 512).unwrap(), l);
        // 512-byte everything: unchanged.
        let l = limits_for(&backing(1 << 20, 512, 512)).unwrap();
        assert_eq!(with_cache_block(l, 512).unwrap(), l);
        // A capacity of 4 KiB + 512 bytes cannot be a 4 KiB volume.
        let l = limits_for(&backing(9, 512, 512)).unwrap();
        assert_eq!(
            with_cache_block(l, 4096),
            Err(GeometryError::CacheUnaligned)
        );
        assert_eq!(with_cache_block(l, 1000), Err(GeometryError::BadBlockSize));
    }

    proptest::proptest! {
        #[test]
        fn cache_limits_keep_records_aligned(sectors in 1u64..1 << 40, lbs_shift in 9u32..13,
                                             cbs_shift in 9u32..13, maxhw in 0u32..1 << 16,
                                             disc in 0u32..1 << 20, gran in 0u32..1 << 20) {
            let b = Backing {
                sectors,
                logical_block_size: 1 << lbs_shift,
                physical_block_size: 1 << lbs_shift,
                max_discard_sectors: disc,
                discard_granularity: gran,
                max_write_zeroes_sectors: 0,
                max_hw_sectors: maxhw,
            };
            let Ok(l) = limits_for(&b) else { return Ok(()); };
            match with_cache_block(l, 1 << cbs_shift) {
                Ok(c) => {
                    let cbs = 1u32 << cbs_shift;
                    // Every request is a whole number of the cache's and the SAN's blocks.
                    proptest::prop_assert_eq!(c.logical_block_size % cbs, 0);
                    proptest::prop_assert_eq!(c.logical_block_size % l.logical_block_size, 0);
                    let lbs_sectors = c.logical_block_size / 512;
                    proptest::prop_assert_eq!(c.max_hw_sectors % lbs_sectors, 0);
                    proptest::prop_assert!(c.max_hw_sectors >= lbs_sectors);
                    proptest::prop_assert!(c.max_hw_sectors <= l.max_hw_sectors.max(lbs_sectors));
                    proptest::prop_assert_eq!(c.sectors % u64::from(lbs_sectors), 0);
                    proptest::prop_assert_eq!(c.sectors, l.sectors);
                    proptest::prop_assert!(c.physical_block_size >= c.logical_block_size);
                    if c.max_discard_sectors > 0 {
                        proptest::prop_assert!(c.discard_granularity >= c.logical_block_size);
                    }
                }
                Err(e) => {
                    proptest::prop_assert_eq!(e, GeometryError::CacheUnaligned);
                    proptest::prop_assert!(l.sectors % u64::from(l.logical_block_size.max(1 << cbs_shift) / 512) != 0);
                }
            }
        }
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
