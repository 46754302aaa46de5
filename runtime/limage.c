/* sd.core.image: PNG writing with text chunks, image reading, float image -> 8-bit pixels. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "image.h"
#include "lsd.h"
#include "sd_error.h"
#include "sha256.h"

/* write_png(path, pixels, texts): pixels a u8 tensor (H, W, C), C in 1..4; texts {key = text} */
static int l_write_png(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	sd_tensor *t = sdl_checktensor(L, 2);
	if (t->dtype != SD_U8 || t->ndim != 3 || t->shape[2] < 1 || t->shape[2] > 4)
		return luaL_error(L, "write_png: expected a u8 tensor (H, W, C) with 1 to 4 channels, got %s %s",
		                  sd_dtype_name(t->dtype), SD_SHAPE_STR(t));
	if (t->shape[0] > 65535 || t->shape[1] > 65535 || t->shape[0] < 1 || t->shape[1] < 1)
		return luaL_error(L, "write_png: image size %s out of range", SD_SHAPE_STR(t));
	sd_png_text texts[16];
	int n = 0;
	if (!lua_isnoneornil(L, 3)) {
		luaL_checktype(L, 3, LUA_TTABLE);
		lua_pushnil(L);
		while (lua_next(L, 3)) {
			if (n == 16) return luaL_error(L, "write_png: at most 16 text chunks");
			if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
				return luaL_error(L, "write_png: text chunks must map string keys to strings");
			texts[n].key = lua_tostring(L, -2);
			texts[n].text = lua_tostring(L, -1);
			if (strlen(texts[n].text) != lua_rawlen(L, -1))
				return luaL_error(L, "write_png: text '%s' contains a NUL byte", texts[n].key);
			n++;
			lua_pop(L, 1); /* strings stay alive: they are in the table */
		}
	}
	sd_tensor c;
	if (sd_tensor_contiguous(t, &c) != 0) return sdl_error(L, "write_png");
	int r = sd_png_write(path, sd_tensor_data(&c), (int)t->shape[1], (int)t->shape[0], (int)t->shape[2], texts, n);
	sd_tensor_release(&c);
	if (r != 0) return sdl_error(L, "write_png");
	return 0;
}

/* read(path [, channels=3]) -> u8 tensor (H, W, C) */
static int l_read(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	lua_Integer want = luaL_optinteger(L, 2, 3);
	if (want < 1 || want > 4) return luaL_argerror(L, 2, "channels must be 1 to 4");
	uint8_t *px;
	int w, h;
	if (sd_image_read(path, (int)want, &px, &w, &h) != 0) return sdl_error(L, "image.read");
	sd_tensor *t = sdl_newtensor(L);
	int64_t shape[3] = {h, w, want};
	if (sd_tensor_new(t, SD_U8, 3, shape) != 0) { free(px); return sdl_error(L, "image.read"); }
	memcpy(sd_tensor_data(t), px, (size_t)h * (size_t)w * (size_t)want);
	free(px);
	return 1;
}

static void on_text(void *ctx, const char *key, const char *text, size_t len)
{
	lua_State *L = ctx;
	lua_pushlstring(L, text, len);
	lua_setfield(L, -2, key);
}

/* read_text(path) -> {key = text} of a PNG's tEXt/iTXt chunks */
static int l_read_text(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	lua_newtable(L);
	if (sd_png_read_text(path, on_text, L) != 0) return sdl_error(L, "image.read_text");
	return 1;
}

/* to_u8(img) -> (H, W, C) u8: img (C, H, W) f32, clamped to [0, 1], times 255 in float32 and
 * rounded half to even, as diffusers' numpy_to_pil does. */
static int l_to_u8(lua_State *L)
{
	sd_tensor *t = sdl_checkf32(L, 1);
	if (t->ndim != 3 || t->shape[0] < 1 || t->shape[0] > 4)
		return luaL_error(L, "to_u8: expected an image (C, H, W) with 1 to 4 channels, got %s", SD_SHAPE_STR(t));
	int64_t C = t->shape[0], H = t->shape[1], W = t->shape[2];
	sd_tensor *o = sdl_newtensor(L);
	int64_t shape[3] = {H, W, C};
	if (sd_tensor_new(o, SD_U8, 3, shape) != 0) return sdl_error(L, "to_u8");
	const float *x = sd_tensor_data(t);
	uint8_t *y = sd_tensor_data(o);
	for (int64_t c = 0; c < C; c++)
		for (int64_t i = 0; i < H; i++)
			for (int64_t j = 0; j < W; j++) {
				float v = x[c * t->stride[0] + i * t->stride[1] + j * t->stride[2]];
				v = v > 0 ? (v < 1 ? v : 1) : 0; /* NaN -> 0 */
				y[(i * W + j) * C + c] = (uint8_t)rintf(v * 255.0f);
			}
	return 1;
}

static void push_hex(lua_State *L, const unsigned char d[32])
{
	char hex[65];
	for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", d[i]);
	lua_pushlstring(L, hex, 64);
}

/* sha256(string) -> hex digest */
static int l_sha256(lua_State *L)
{
	size_t n;
	const char *s = luaL_checklstring(L, 1, &n);
	unsigned char d[32];
	sd_sha256 c;
	sd_sha256_init(&c);
	sd_sha256_update(&c, s, n);
	sd_sha256_final(&c, d);
	push_hex(L, d);
	return 1;
}

/* hmac_sha256(key, message) -> hex digest */
static int l_hmac_sha256(lua_State *L)
{
	size_t kn, mn;
	const char *k = luaL_checklstring(L, 1, &kn), *m = luaL_checklstring(L, 2, &mn);
	unsigned char d[32];
	sd_hmac_sha256(k, kn, m, mn, d);
	push_hex(L, d);
	return 1;
}

/* model_hash(path) -> AUTOMATIC1111's short model hash: the first 8 hex digits of the SHA-256 of
 * the 64 KiB at offset 1 MiB (of a folder: nil). */
static int l_model_hash(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	FILE *f = fopen(path, "rb");
	if (!f) { lua_pushnil(L); return 1; }
	unsigned char *buf = malloc(0x10000), d[32];
	size_t n = 0;
	if (buf && fseek(f, 0x100000, SEEK_SET) == 0) n = fread(buf, 1, 0x10000, f);
	fclose(f);
	sd_sha256 c;
	sd_sha256_init(&c);
	sd_sha256_update(&c, buf ? buf : d, n);
	sd_sha256_final(&c, d);
	free(buf);
	push_hex(L, d);
	lua_pushlstring(L, lua_tostring(L, -1), 8);
	return 1;
}

static const luaL_Reg functions[] = {
	{"write_png", l_write_png}, {"read", l_read}, {"read_text", l_read_text}, {"to_u8", l_to_u8},
	{"model_hash", l_model_hash}, {NULL, NULL}};

static const luaL_Reg hashes[] = {{"sha256", l_sha256}, {"hmac_sha256", l_hmac_sha256}, {NULL, NULL}};

void sdl_open_image(lua_State *L)
{
	sdl_addcore(L, "image", functions);
	sdl_addcore(L, NULL, hashes);
}
