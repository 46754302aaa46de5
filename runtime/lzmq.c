/* placeholder until lzmq.c is written */
#include "lsd.h"
void sdl_open_zmq(lua_State *L) { (void)L; }
