#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>
#include "image.h"
#include "sd_error.h"
#include <sys/stat.h>

/* mkstemp creates 0600 files; give the image the mode a plain fopen would. */
static mode_t current_umask(void)
{
	mode_t m = umask(022);
	umask(m);
	return m;
}

/* stb is linked from Debian's libstb; these are its public entry points. */
typedef void stbi_write_func(void *context, void *data, int size);
int stbi_write_png_to_func(stbi_write_func *func, void *context, int w, int h, int comp, const void *data, int stride);
unsigned char *stbi_load(const char *filename, int *x, int *y, int *comp, int req_comp);
void stbi_image_free(void *p);
const char *stbi_failure_reason(void);

typedef struct buffer { unsigned char *p; size_t n, cap; int failed; } buffer;

static void append(buffer *b, const void *data, size_t n)
{
	if (b->failed) return;
	if (b->n + n > b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 65536;
		while (cap < b->n + n) cap *= 2;
		unsigned char *p = realloc(b->p, cap);
		if (!p) { b->failed = 1; return; }
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->n, data, n);
	b->n += n;
}

static void on_png_bytes(void *ctx, void *data, int size) { append(ctx, data, (size_t)size); }

static void put_be32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24); p[1] = (unsigned char)(v >> 16); p[2] = (unsigned char)(v >> 8); p[3] = (unsigned char)v;
}

static void append_chunk(buffer *b, const char type[4], const unsigned char *data, size_t n)
{
	unsigned char head[8], crc[4];
	put_be32(head, (uint32_t)n);
	memcpy(head + 4, type, 4);
	uLong c = crc32(0, (const Bytef *)type, 4);
	c = crc32(c, data, (uInt)n);
	put_be32(crc, (uint32_t)c);
	append(b, head, 8);
	append(b, data, n);
	append(b, crc, 4);
}

static int is_ascii(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s >= 0x80) return 0;
	return 1;
}

int sd_png_write(const char *path, const uint8_t *pixels, int width, int height, int channels,
                 const sd_png_text *texts, int ntexts)
{
	if (width <= 0 || height <= 0 || channels < 1 || channels > 4)
		return sd_seterr("cannot write a %dx%d image with %d channels", width, height, channels);
	buffer png = {0}, out = {0};
	if (!stbi_write_png_to_func(on_png_bytes, &png, width, height, channels, pixels, width * channels) || png.failed || png.n < 33) {
		free(png.p);
		return sd_seterr("PNG encoding failed for %s", path);
	}
	/* signature + IHDR (8 + 25 bytes), then our text chunks, then the rest */
	append(&out, png.p, 33);
	for (int i = 0; i < ntexts; i++) {
		buffer chunk = {0};
		size_t klen = strlen(texts[i].key);
		if (klen < 1 || klen > 79) {
			free(png.p); free(out.p);
			return sd_seterr("PNG text key '%s' must have 1 to 79 characters", texts[i].key);
		}
		append(&chunk, texts[i].key, klen + 1);
		if (is_ascii(texts[i].text)) {
			append(&chunk, texts[i].text, strlen(texts[i].text));
			append_chunk(&out, "tEXt", chunk.p, chunk.n);
		} else { /* compression flag 0, method 0, empty language tag and translated key */
			append(&chunk, "\0\0\0\0", 4);
			append(&chunk, texts[i].text, strlen(texts[i].text));
			append_chunk(&out, "iTXt", chunk.p, chunk.n);
		}
		int failed = chunk.failed;
		free(chunk.p);
		if (failed) { free(png.p); free(out.p); return sd_seterr("out of memory"); }
	}
	append(&out, png.p + 33, png.n - 33);
	free(png.p);
	if (out.failed) { free(out.p); return sd_seterr("out of memory"); }

	size_t plen = strlen(path);
	char *tmp = malloc(plen + 16);
	if (!tmp) { free(out.p); return sd_seterr("out of memory"); }
	snprintf(tmp, plen + 16, "%s.tmp.XXXXXX", path);
	int fd = mkstemp(tmp);
	if (fd < 0) {
		sd_seterr("cannot create %s: %s", tmp, strerror(errno));
		free(tmp); free(out.p);
		return -1;
	}
	size_t done = 0;
	while (done < out.n) {
		ssize_t w = write(fd, out.p + done, out.n - done);
		if (w < 0 && errno == EINTR) continue;
		if (w <= 0) break;
		done += (size_t)w;
	}
	int ok = done == out.n && fsync(fd) == 0;
	int err = errno;
	ok = (close(fd) == 0) && ok;
	if (ok && chmod(tmp, 0644 & ~current_umask()) == 0 && rename(tmp, path) == 0) {
		free(tmp); free(out.p);
		return 0;
	}
	if (!err) err = errno;
	unlink(tmp);
	sd_seterr("cannot write %s: %s", path, strerror(err ? err : EIO));
	free(tmp); free(out.p);
	return -1;
}

int sd_image_read(const char *path, int want, uint8_t **pixels, int *width, int *height)
{
	int comp;
	FILE *f = fopen(path, "rb");
	if (!f) return sd_seterr("cannot open %s: %s", path, strerror(errno));
	fclose(f);
	unsigned char *p = stbi_load(path, width, height, &comp, want);
	if (!p) return sd_seterr("cannot decode %s: %s", path, stbi_failure_reason());
	*pixels = p;
	return 0;
}

static uint32_t be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

int sd_png_read_text(const char *path, void (*fn)(void *, const char *, const char *, size_t), void *ctx)
{
	FILE *f = fopen(path, "rb");
	if (!f) return sd_seterr("cannot open %s: %s", path, strerror(errno));
	unsigned char sig[8], head[8];
	if (fread(sig, 1, 8, f) != 8 || memcmp(sig, "\x89PNG\r\n\x1a\n", 8) != 0) {
		fclose(f);
		return sd_seterr("%s is not a PNG file", path);
	}
	int r = 0;
	while (fread(head, 1, 8, f) == 8) {
		uint32_t n = be32(head);
		if (n > (1u << 30)) { r = sd_seterr("%s: corrupt PNG chunk length", path); break; }
		if (memcmp(head + 4, "IEND", 4) == 0) break;
		int text = memcmp(head + 4, "tEXt", 4) == 0, itxt = memcmp(head + 4, "iTXt", 4) == 0;
		if (!text && !itxt) {
			if (fseek(f, (long)n + 4, SEEK_CUR) != 0) break;
			continue;
		}
		char *data = malloc((size_t)n + 1);
		if (!data) { r = sd_seterr("out of memory"); break; }
		if (fread(data, 1, n, f) != n || fseek(f, 4, SEEK_CUR) != 0) { free(data); r = sd_seterr("%s: truncated PNG", path); break; }
		data[n] = 0;
		size_t klen = strnlen(data, n);
		if (klen < n) {
			const char *body = data + klen + 1;
			size_t blen = n - klen - 1;
			if (itxt) { /* flag, method, language\0, translated key\0 */
				if (blen >= 2 && body[0] == 0) {
					const char *q = body + 2, *end = data + n;
					const char *z1 = memchr(q, 0, (size_t)(end - q));
					const char *z2 = z1 ? memchr(z1 + 1, 0, (size_t)(end - z1 - 1)) : NULL;
					if (z2) fn(ctx, data, z2 + 1, (size_t)(end - z2 - 1));
				}
			} else {
				fn(ctx, data, body, blen);
			}
		}
		free(data);
	}
	fclose(f);
	return r;
}
