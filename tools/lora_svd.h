/* lora_svd.h - the SVD subcommands of `stylora lora` (cmd_lora_svd.c), dispatched by cmd_lora.c. */
#ifndef SL_TOOLS_LORA_SVD_H
#define SL_TOOLS_LORA_SVD_H

/* `stylora lora resize ...`: argv[0] is "resize". Returns the exit code. */
int lora_resize_main(int argc, char **argv);
/* `stylora lora merge ... --to-adapter OUT`: argv[0] is "merge". Returns the exit code. */
int lora_merge_to_adapter(int argc, char **argv);

#endif
