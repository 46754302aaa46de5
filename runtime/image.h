/* PNG files: writing 8-bit RGB(A)/gray images with text chunks (atomically), reading any image
 * stb_image knows, and reading a PNG's text chunks. */
#ifndef SD_IMAGE_H
#define SD_IMAGE_H

#include <stddef.h>
#include <stdint.h>

typedef struct sd_png_text { const char *key, *text; } sd_png_text;

/* Writes path via a temporary file in the same folder and a rename: an existing file is replaced
 * only by a complete one. Text chunks: tEXt for ASCII text, iTXt (UTF-8) otherwise. */
int sd_png_write(const char *path, const uint8_t *pixels, int width, int height, int channels,
                 const sd_png_text *texts, int ntexts);

/* Decodes an image file; *pixels is malloc'd (h*w*channels bytes, channels forced to `want`). */
int sd_image_read(const char *path, int want, uint8_t **pixels, int *width, int *height);

/* Calls fn for each tEXt/iTXt chunk of a PNG file (uncompressed text only). */
int sd_png_read_text(const char *path, void (*fn)(void *ctx, const char *key, const char *text, size_t len), void *ctx);

#endif
