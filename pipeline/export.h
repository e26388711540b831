/* export.h - writing a model's weights out in another layout (merged models).
 *
 * An SlExport collects tensors of several components into one safetensors writer:
 * each part is either a list of named fp32 arrays (a loaded U-Net's parameters) or
 * the tensors of a component's files with some of them replaced by fp32 arrays (a
 * text encoder whose merged linears live in memory). Names go through an optional
 * key map (diffusers name -> original LDM name: sl_unet_ldm_map, sl_vae_ldm_key_map)
 * and a prefix ("model.diffusion_model.", ...), the same tables the single-file
 * reader uses, so the writer and the reader cannot drift apart.
 *
 * Dtypes: each float tensor is stored as `dtype`, or, with keep_dtype, as the source
 * file stored it (F32 for arrays that have no file entry). Integer tensors (CLIP's
 * position_ids) are copied as they are. Unchanged tensors are referenced in the mapped
 * source file, not copied: the source SlWeights must stay open until sl_export_save.
 *
 * Not here: merging (styles/), folder layout and configs (tools/cmd_lora.c).
 */
#ifndef SL_PIPELINE_EXPORT_H
#define SL_PIPELINE_EXPORT_H

#include "core/safetensors.h"
#include "core/weights.h"

typedef struct SlExportTensor {
    const char *name;        /* diffusers name, e.g. "down_blocks.0.resnets.0.conv1.weight" */
    int ndim;
    const int64_t *shape;
    const float *data;       /* fp32 values; must live until sl_export_save */
} SlExportTensor;

typedef struct SlExportPart {
    const char *what;              /* "unet", "vae", "text_encoder": names the part in errors */
    SlWeights *src;                /* the component's files, or NULL: the part is `tensors` */
    const SlExportTensor *tensors; /* with src: replacements (by name); without: the content */
    int n_tensors;
    const SlKeyPair *map;          /* from = diffusers name, to = output name; NULL: names kept.
                                      With a map every tensor must be in it (else an error). */
    int n_map;
    const char *prefix;            /* prepended to every output name ("" or NULL: none) */
    int linear_as_conv;            /* float 2-D tensors are written [O,I,1,1] (LDM VAE attention) */
    SlDType dtype;                 /* F32, F16 or BF16 */
    int keep_dtype;                /* 1: store each float tensor as the source file did */
} SlExportPart;

typedef struct SlExport {
    SlStWriter wr;                 /* add metadata with sl_st_writer_meta(&x->wr, ...) */
    int n_bufs, cap_bufs;
    float **bufs;                  /* fp32 reads the writer references until save */
} SlExport;

void sl_export_init(SlExport *x);
/* Adds every tensor of the part. A name missing from the map, a replacement whose shape
 * differs from the file's, or a duplicate output name fails naming the part and tensor. */
SlStatus sl_export_add(SlExport *x, const SlExportPart *p, SlCtx *ctx);
/* Writes atomically (core/safetensors.h). */
SlStatus sl_export_save(SlExport *x, const char *path, SlCtx *ctx);
void sl_export_free(SlExport *x);

#endif
