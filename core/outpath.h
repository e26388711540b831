/* outpath.h - may stylora write this path? Checked before any work is done.
 *
 * Every file stylora writes either replaces a regular file or creates a new
 * path. Anything else at the path (a folder, FIFO, device node, socket) is
 * refused: the atomic writers (temp file + rename) would replace it with a
 * regular file (`--out /dev/full` used to replace the device), and the plain
 * writers (the CSV log, copied configs) would block on a FIFO or write into a
 * device. The tools check every output path up front, before loading a model,
 * so a bad path fails in milliseconds rather than after training; the atomic
 * writers (sl_st_writer_save, sl_image_write_png) check again as a backstop.
 *
 * Not here: creating folders or files (the callers do that).
 */
#ifndef SL_OUTPATH_H
#define SL_OUTPATH_H

#include "status.h"

/* SL_OK if `path` is a regular file (or a symlink to one), or does not exist
 * and its parent is an existing, writable folder. Otherwise SL_ERR_IO (SL_ERR_ARG
 * for an empty path) with a message "<what> <path>: <reason>", e.g.
 * "--out /dev/full: not a regular file (character device); refusing to replace it".
 * `what` names the option (may be NULL: the message starts with the path). */
SlStatus sl_path_check_writable(const char *what, const char *path, SlCtx *ctx);

/* The same for an output folder: SL_OK if `path` is an existing writable
 * folder, or does not exist and its parent is an existing, writable folder. */
SlStatus sl_path_check_writable_dir(const char *what, const char *path, SlCtx *ctx);

#endif
