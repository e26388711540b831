/* data.h - a training set from a folder of images and captions.
 *
 * Layout (kohya's conventions): images anywhere below the folder (PNG, JPEG,
 * BMP, TGA, GIF), the caption of NAME.png in NAME.txt (or NAME.caption), else
 * the default caption; a sub-folder named "N_anything" repeats its images N
 * times per epoch. An optional trigger word is put first ("trigger, caption").
 * Items are sorted by path so the order never depends on the file system.
 *
 * Images are read when prepared (sl_data_prepare_image): RGBA is composited on
 * white, the shorter side is resized to the training resolution (area filter
 * when shrinking, bilinear when enlarging) and the longer side cropped (center,
 * or at an offset the caller draws), optionally mirrored.
 *
 * Aspect-ratio buckets (kohya's enable_bucket; kohya-ss/sd-scripts
 * library/model_util.py make_bucket_resolutions, library/train_util.py
 * BucketManager.select_bucket and trim_and_resize_if_required): a set of sizes of
 * about the area R^2 in steps of `step` px; an image goes to the bucket whose
 * aspect ratio is closest, is resized so that it covers the bucket (kohya's
 * rounding) and center-cropped to it (kohya crops at random only without cached
 * latents; stylora always caches them).
 *
 * Dimension letters: R resolution (square crops), W x H a bucket, C = 3 channels.
 */
#ifndef SL_PIPELINE_DATA_H
#define SL_PIPELINE_DATA_H

#include <stdint.h>

#include "core/hash.h" /* sl_hash_bytes, for the callers of sl_file_hash */
#include "core/status.h"

typedef struct SlDataOpts {
    const char *default_caption; /* when an image has no caption file (may be NULL: "") */
    const char *trigger;         /* put first, may be NULL */
    int64_t max_pixels;          /* refuse larger images (0: the image reader's default) */
} SlDataOpts;

typedef struct SlDataItem {
    char *path;
    char *caption;      /* trigger + caption text, whitespace-trimmed */
    int repeats;        /* from an "N_name" folder, else 1 */
} SlDataItem;

typedef struct SlDataset {
    char root[1024];
    int n;              /* images found */
    SlDataItem *items;
    int64_t n_samples;  /* sum of repeats: samples per epoch */
} SlDataset;

/* Scans dir recursively. An empty folder (no image files) is SL_ERR_MISSING;
 * an unreadable caption file, or one holding a NUL byte, is an error naming it.
 * Warns (ctx log) when every caption is empty: no caption files, no default
 * caption, no trigger. */
SlStatus sl_dataset_scan(SlDataset *d, const char *dir, const SlDataOpts *opts, SlCtx *ctx);
void sl_dataset_free(SlDataset *d);
/* Index of the item behind epoch sample s (0 <= s < n_samples, in item order). */
int sl_dataset_item_of_sample(const SlDataset *d, int64_t s);

/* Reads path and makes a [3,R,R] float image in [-1,1]: composite on white,
 * resize the shorter side to R, crop at (crop_u in [0,1]) of the slack along the
 * longer side (0.5 = center), mirror if flip. */
SlStatus sl_data_prepare_image(float *chw, const char *path, int R, float crop_u, int flip, int64_t max_pixels,
                               SlCtx *ctx);

/* A bucket size in pixels. */
typedef struct SlBucket { int w, h; } SlBucket;

#define SL_MAX_BUCKETS 1024

typedef struct SlBuckets {
    int n;
    SlBucket b[SL_MAX_BUCKETS]; /* sorted by (w, h), as kohya's sorted list of tuples */
} SlBuckets;

/* kohya's make_bucket_resolutions((R, R), min_side, max_side, step): the square
 * floor(R / step) * step, then for each width w = min_side, min_side + step, ..
 * <= max_side the height min(max_side, floor(R^2 / w / step) * step), kept (with
 * its transpose) when >= min_side; duplicates dropped, sorted. Every bucket's
 * area is <= R^2. Bad limits (step < 1, min_side < step, max_side < min_side,
 * too many buckets) are SL_ERR_ARG. */
SlStatus sl_buckets_make(SlBuckets *bk, int R, int min_side, int max_side, int step, SlCtx *ctx);
/* kohya's select_bucket (with upscaling): the bucket of exactly img_w x img_h if
 * there is one, else the first bucket whose aspect ratio w/h is closest to the
 * image's; *rw x *rh is the size the image is resized to before the crop (it
 * covers the bucket). Returns the bucket's index. */
int sl_buckets_select(const SlBuckets *bk, int img_w, int img_h, int *rw, int *rh);

/* Reads path and makes a [3,H,W] float image in [-1,1] for bucket W x H: composite
 * on white, resize to cover it as sl_buckets_select says (area filter when
 * shrinking, bilinear when enlarging), center crop (kohya: trim // 2 from the
 * left/top), mirror if flip. A resized size above the pixel limit (max_pixels, or
 * the reader's default) is SL_ERR_FORMAT naming the file. */
SlStatus sl_data_prepare_image_bucket(float *chw, const char *path, const SlBuckets *bk, int bucket, int flip,
                                      int64_t max_pixels, SlCtx *ctx);

/* 64-bit FNV-1a (core/hash.h) of a file's bytes, mixed with `salt` (cache keys). */
SlStatus sl_file_hash(const char *path, uint64_t salt, uint64_t *out, SlCtx *ctx);

#endif
