/* Errors: a failing runtime or kernel function records a message with sd_seterr and returns
 * -1 (or NULL). The Lua binding turns the message into a Lua error. The message is per thread. */
#ifndef SD_ERROR_H
#define SD_ERROR_H

int sd_seterr(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
const char *sd_geterr(void);

#endif
