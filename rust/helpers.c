// SPDX-License-Identifier: GPL-2.0
/*
 * Wrappers for kernel APIs that exist only as static inline functions or macros, so that the
 * Rust side of peerflash can call them. Nothing here holds logic: each function is one
 * expression of the API it names. Prototypes are in this file (no header) to satisfy
 * -Wmissing-prototypes; the Rust declarations are in rust/blk/ffi.rs.
 */
#include <crypto/poly1305.h>
#include <crypto/sha2.h>
#include <linux/bio.h>
#include <linux/blk-mq.h>
#include <linux/blkdev.h>
#include <linux/fs.h>
#include <linux/highmem.h>
#include <linux/kthread.h>
#include <linux/sched/mm.h>
#include <linux/sched/task.h>
#include <linux/workqueue.h>

/* rust/klib.rs keeps a struct poly1305_desc_ctx in 64 eight-byte words. */
static_assert(sizeof(struct poly1305_desc_ctx) <= 64 * sizeof(u64));
static_assert(__alignof__(struct poly1305_desc_ctx) <= 8);

gfp_t pf_gfp_noio(void);
void pf_hmac_sha256_update(struct hmac_sha256_ctx *ctx, const u8 *data, size_t len);
blk_features_t pf_feat_write_cache_fua(void);
blk_features_t pf_feat_stable_writes(void);
blk_mode_t pf_open_mode_rw(void);
blk_opf_t pf_opf_flush(void);
blk_opf_t pf_opf_read(void);
blk_opf_t pf_opf_write_fua(void);
blk_opf_t pf_opf_write(void);
sector_t pf_rq_pos(struct request *rq);
void pf_rq_for_each_data(struct request *rq, void (*fn)(void *ctx, const u8 *p, u32 len), void *ctx);
bool pf_bio_add_rq_pages(struct bio *bio, struct request *rq);
unsigned short pf_rq_nr_bvecs(struct request *rq);
struct workqueue_struct *pf_alloc_wq(const char *name, int max_active);
bool pf_queue_work_on(struct workqueue_struct *wq, struct work_struct *work);
struct task_struct *pf_kthread_run(int (*fn)(void *), void *data, const char *name);
unsigned int pf_memalloc_noio_save(void);
struct gendisk *pf_dev_to_disk(struct device *dev);
void pf_dev_attr_init(struct device_attribute *da, const char *name, umode_t mode,
		      ssize_t (*show)(struct device *, struct device_attribute *, char *),
		      ssize_t (*store)(struct device *, struct device_attribute *, const char *, size_t));
void pf_attr_group_init(struct attribute_group *g, const char *name, struct attribute **attrs);
void pf_memalloc_noio_restore(unsigned int flags);
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
void pf_hmac_sha256_update(struct hmac_sha256_ctx *ctx, const u8 *data, size_t len) { hmac_sha256_update(ctx, data, len); }
blk_features_t pf_feat_write_cache_fua(void) { return BLK_FEAT_WRITE_CACHE | BLK_FEAT_FUA; }
blk_features_t pf_feat_stable_writes(void) { return BLK_FEAT_STABLE_WRITES; }
blk_mode_t pf_open_mode_rw(void) { return BLK_OPEN_READ | BLK_OPEN_WRITE; }
blk_opf_t pf_opf_flush(void) { return REQ_OP_WRITE | REQ_PREFLUSH; }
blk_opf_t pf_opf_read(void) { return REQ_OP_READ; }
blk_opf_t pf_opf_write_fua(void) { return REQ_OP_WRITE | REQ_SYNC | REQ_FUA; }
blk_opf_t pf_opf_write(void) { return REQ_OP_WRITE | REQ_SYNC; }
sector_t pf_rq_pos(struct request *rq) { return blk_rq_pos(rq); }
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

/*
 * The three request iterations below are rq_for_each_segment / rq_for_each_bvec (macros) with
 * one call each: Rust callback on the mapped data, bio_add_page, counting.
 */
void pf_rq_for_each_data(struct request *rq, void (*fn)(void *ctx, const u8 *p, u32 len), void *ctx)
{
	struct req_iterator iter;
	struct bio_vec bv;

	rq_for_each_segment(bv, rq, iter) {
		const u8 *p = bvec_kmap_local(&bv);

		fn(ctx, p, bv.bv_len);
		kunmap_local(p);
	}
}

bool pf_bio_add_rq_pages(struct bio *bio, struct request *rq)
{
	struct req_iterator iter;
	struct bio_vec bv;

	rq_for_each_segment(bv, rq, iter) {
		if (bio_add_page(bio, bv.bv_page, bv.bv_len, bv.bv_offset) != bv.bv_len)
			return false;
	}
	return true;
}

/*
 * The vectors a bio needs for the request's data when it is added with pf_bio_add_rq_pages:
 * bio_add_page merges a piece into the previous vector when it continues it physically, so this
 * counts physically contiguous runs (rq_for_each_bvec gives multi-page pieces: a 1 KiB piece that
 * crosses a page boundary inside a huge page is one piece, not two). At most BIO_MAX_VECS.
 */
unsigned short pf_rq_nr_bvecs(struct request *rq)
{
	struct req_iterator iter;
	struct bio_vec bv;
	phys_addr_t end = 0;
	unsigned int n = 0;

	rq_for_each_bvec(bv, rq, iter) {
		if (!n || bvec_phys(&bv) != end)
			n++;
		end = bvec_phys(&bv) + bv.bv_len;
	}
	return min_t(unsigned int, n, BIO_MAX_VECS);
}

struct workqueue_struct *pf_alloc_wq(const char *name, int max_active)
{
	return alloc_workqueue("%s", WQ_UNBOUND | WQ_MEM_RECLAIM | WQ_HIGHPRI, max_active, name);
}

bool pf_queue_work_on(struct workqueue_struct *wq, struct work_struct *work) { return queue_work(wq, work); }

/* kthread_run with a task reference for kthread_stop_put (the thread may not outlive it). */
struct task_struct *pf_kthread_run(int (*fn)(void *), void *data, const char *name)
{
	struct task_struct *t = kthread_run(fn, data, "%s", name);

	if (!IS_ERR(t))
		get_task_struct(t);
	return t;
}

unsigned int pf_memalloc_noio_save(void) { return memalloc_noio_save(); }
void pf_memalloc_noio_restore(unsigned int flags) { memalloc_noio_restore(flags); }

struct gendisk *pf_dev_to_disk(struct device *dev) { return dev_to_disk(dev); }

/* Field setters for a dynamically allocated sysfs attribute and its group. */
void pf_dev_attr_init(struct device_attribute *da, const char *name, umode_t mode,
		      ssize_t (*show)(struct device *, struct device_attribute *, char *),
		      ssize_t (*store)(struct device *, struct device_attribute *, const char *, size_t))
{
	sysfs_attr_init(&da->attr);
	da->attr.name = name;
	da->attr.mode = mode;
	da->show = show;
	da->store = store;
}

void pf_attr_group_init(struct attribute_group *g, const char *name, struct attribute **attrs)
{
	g->name = name;
	g->attrs = attrs;
}
