// SPDX-License-Identifier: GPL-2.0
/*
 * Wrappers for kernel APIs that exist only as static inline functions or macros, so that the
 * Rust side of peerflash can call them. Nothing here holds logic: each function is one
 * expression of the API it names. Prototypes are in this file (no header) to satisfy
 * -Wmissing-prototypes; the Rust declarations are in rust/blk/ffi.rs.
 */
#include <linux/bio.h>
#include <linux/blk-mq.h>
#include <linux/blkdev.h>
#include <linux/fs.h>
#include <linux/workqueue.h>

gfp_t pf_gfp_noio(void);
blk_features_t pf_feat_write_cache_fua(void);
blk_mode_t pf_open_mode_rw(void);
blk_opf_t pf_opf_flush(void);
blk_opf_t pf_opf_read(void);
blk_opf_t pf_opf_write_fua(void);
unsigned int pf_rq_op(struct request *rq);
bool pf_rq_is_fua(struct request *rq);
bool pf_rq_in_flush_seq(struct request *rq);
struct request *pf_rq_from_pdu(void *pdu);
void pf_init_work(struct work_struct *work, work_func_t func);
bool pf_queue_work(struct work_struct *work);
unsigned int pf_bio_op(struct bio *bio);
unsigned int pf_disk_openers(struct gendisk *disk);
int pf_disk_claim_for_removal(struct gendisk *disk, bool *removing);
sector_t pf_bdev_nr_sectors(struct block_device *bdev);
unsigned int pf_bdev_logical_block_size(struct block_device *bdev);
unsigned int pf_bdev_physical_block_size(struct block_device *bdev);
unsigned int pf_bdev_max_discard_sectors(struct block_device *bdev);
unsigned int pf_bdev_discard_granularity(struct block_device *bdev);
unsigned int pf_bdev_write_zeroes_sectors(struct block_device *bdev);
unsigned int pf_bdev_max_hw_sectors(struct block_device *bdev);
const struct block_device_operations *pf_bdev_fops(struct block_device *bdev);

gfp_t pf_gfp_noio(void) { return GFP_NOIO; }
blk_features_t pf_feat_write_cache_fua(void) { return BLK_FEAT_WRITE_CACHE | BLK_FEAT_FUA; }
blk_mode_t pf_open_mode_rw(void) { return BLK_OPEN_READ | BLK_OPEN_WRITE; }
blk_opf_t pf_opf_flush(void) { return REQ_OP_WRITE | REQ_PREFLUSH; }
blk_opf_t pf_opf_read(void) { return REQ_OP_READ; }
blk_opf_t pf_opf_write_fua(void) { return REQ_OP_WRITE | REQ_SYNC | REQ_FUA; }
unsigned int pf_rq_op(struct request *rq) { return req_op(rq); }
bool pf_rq_is_fua(struct request *rq) { return rq->cmd_flags & REQ_FUA; }
bool pf_rq_in_flush_seq(struct request *rq) { return rq->rq_flags & RQF_FLUSH_SEQ; }
struct request *pf_rq_from_pdu(void *pdu) { return blk_mq_rq_from_pdu(pdu); }
void pf_init_work(struct work_struct *work, work_func_t func) { INIT_WORK(work, func); }
bool pf_queue_work(struct work_struct *work) { return queue_work(system_wq, work); }
unsigned int pf_bio_op(struct bio *bio) { return bio_op(bio); }
unsigned int pf_disk_openers(struct gendisk *disk) { return disk_openers(disk); }

/*
 * Under disk->open_mutex (which also serialises ->open), refuse when the disk is open, else set
 * *removing so that no new open succeeds.
 */
int pf_disk_claim_for_removal(struct gendisk *disk, bool *removing)
{
	int ret = 0;

	mutex_lock(&disk->open_mutex);
	if (disk_openers(disk))
		ret = -EBUSY;
	else
		WRITE_ONCE(*removing, true);
	mutex_unlock(&disk->open_mutex);
	return ret;
}

sector_t pf_bdev_nr_sectors(struct block_device *bdev) { return bdev_nr_sectors(bdev); }
unsigned int pf_bdev_logical_block_size(struct block_device *bdev) { return bdev_logical_block_size(bdev); }
unsigned int pf_bdev_physical_block_size(struct block_device *bdev) { return bdev_physical_block_size(bdev); }
unsigned int pf_bdev_max_discard_sectors(struct block_device *bdev) { return bdev_max_discard_sectors(bdev); }
unsigned int pf_bdev_discard_granularity(struct block_device *bdev) { return bdev_discard_granularity(bdev); }
unsigned int pf_bdev_write_zeroes_sectors(struct block_device *bdev) { return bdev_write_zeroes_sectors(bdev); }
unsigned int pf_bdev_max_hw_sectors(struct block_device *bdev) { return queue_max_hw_sectors(bdev_get_queue(bdev)); }
const struct block_device_operations *pf_bdev_fops(struct block_device *bdev) { return bdev->bd_disk->fops; }
