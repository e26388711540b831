/* unet_internal.h - helpers shared by the files of unet/ (not a public API). */
#ifndef SL_UNET_INTERNAL_H
#define SL_UNET_INTERNAL_H

#include "unet.h"

/* Points every module's in/din/out/dout at its layer's buffers (after planning). */
void sl_unet_wire(SlUNet *u);
/* Output height / width of a layer at the planned size. */
int64_t sl_unet_layer_h(const SlUNet *u, const SlUNetLayer *l);
int64_t sl_unet_layer_w(const SlUNet *u, const SlUNetLayer *l);

/* Module forwards (unet.c), called again by backward when checkpointing. */
void sl_unet_resnet_forward(SlUNet *u, SlUNetResnet *r);
void sl_unet_transformer_forward(SlUNet *u, SlUNetTransformer *t);
void sl_unet_sampler_forward(SlUNet *u, SlUNetSampler *s);

#endif
