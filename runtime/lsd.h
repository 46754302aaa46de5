/* Shared helpers of the Lua binding (runtime/l*.c). A tensor is a full userdata holding an
 * sd_tensor value, metatable "sd.Tensor". Each binding file has one luaopen-style function,
 * called by luaopen_sd_core in lsd.c, that adds its luaL_Reg tables with the sdl_add* calls. */
#ifndef SD_LSD_H
#define SD_LSD_H

#include <lauxlib.h>
#include <lua.h>
#include "tensor.h"

#define SDL_TENSOR "sd.Tensor"

sd_tensor *sdl_totensor(lua_State *L, int idx);    /* NULL if not a tensor */
/* the tensor at idx; a Lua error naming the argument if it is something else or released */
sd_tensor *sdl_checktensor(lua_State *L, int idx);
/* like sdl_checktensor but also requires dtype f32 */
sd_tensor *sdl_checkf32(lua_State *L, int idx);
/* Pushes a new userdata holding an empty tensor; the caller fills it (e.g. sd_tensor_new(t, ...)).
 * On failure of that fill, the empty userdata is simply garbage. */
sd_tensor *sdl_newtensor(lua_State *L);
/* Raises "op: <message of the last runtime error>". Never returns. */
int sdl_error(lua_State *L, const char *op);
/* Lua dimension at idx (1-based, negative counts from the end) -> 0-based, checked against ndim. */
int sdl_checkdim(lua_State *L, int idx, int ndim);
int sdl_optdim(lua_State *L, int idx, int ndim, int def0);
/* A shape: a table {2, 3} at idx, or integers idx..top. Returns ndim. */
int sdl_checkshape(lua_State *L, int idx, int64_t shape[SD_MAX_DIMS]);
sd_dtype sdl_checkdtype(lua_State *L, int idx);
sd_dtype sdl_optdtype(lua_State *L, int idx, sd_dtype def);
/* Fields of an options table at idx (absent table or field: the default). A field of the wrong
 * type is an error naming it. */
lua_Integer sdl_optfield_int(lua_State *L, int idx, const char *field, lua_Integer def);
lua_Number sdl_optfield_num(lua_State *L, int idx, const char *field, lua_Number def);
int sdl_optfield_bool(lua_State *L, int idx, const char *field, int def);

/* Registration: tensor methods (x:name()), functions of sd.tensor, functions of sd.core.<name>
 * (a subtable created on first use; name NULL adds to sd.core itself). */
void sdl_addmethods(lua_State *L, const luaL_Reg *fns);
void sdl_addfuncs(lua_State *L, const luaL_Reg *fns);
void sdl_addcore(lua_State *L, const char *name, const luaL_Reg *fns);

/* The binding files. */
void sdl_open_tensor(lua_State *L);      /* ltensor.c: constructors, views, copies, metamethods */
void sdl_open_math(lua_State *L);        /* lmath.c: elementwise, activations, reductions, resampling */
void sdl_open_nn(lua_State *L);          /* lnn.c: matmul, linear, conv2d, norms, softmax, attention */
void sdl_open_rng(lua_State *L);         /* lrng.c: sd.rng.torch */
void sdl_open_safetensors(lua_State *L); /* lsafetensors.c */
void sdl_open_system(lua_State *L);      /* lsystem.c: threads, memory, cpu, time, interrupt, gunzip */
void sdl_open_image(lua_State *L);       /* limage.c: PNG read/write, hashes */
void sdl_open_zmq(lua_State *L);         /* lzmq.c: ZeroMQ sockets for the Jupyter kernel */

/* Ctrl-C (lsystem.c). The flag long-running C loops may poll; sdl_interrupt_lua, safe in a
 * signal handler, raises it and stops L with the error "interrupted!" at its next instruction,
 * call or return; sdl_interrupt_clear removes a stop still pending on L and lowers the flag. */
void sdl_set_interrupted(int on);
int sdl_interrupted(void);
void sdl_interrupt_lua(lua_State *L);
void sdl_interrupt_clear(lua_State *L);

int luaopen_sd_core(lua_State *L);

#endif
