/* rtml server C API: what the Cython protocol (rtml/_wire.pyx) calls on every
 * read, without going through Python. rtml._core exports one static
 * rtml_server_capi struct in the capsule "rtml._core._server_capi" (the way
 * numpy exports its C API), so the core is compiled into one extension only.
 *
 * Versioning: a consumer checks version == RTML_SERVER_CAPI_VERSION and
 * struct_size >= sizeof(rtml_server_capi) before use; fields are only ever
 * appended.
 *
 * Thread-safety: a session belongs to one connection, used by one thread at a
 * time; functions never call into Python, so they may run without the GIL.
 * Nothing here throws or longjmps: failures are return codes. */
#ifndef RTML_SERVER_CAPI_H
#define RTML_SERVER_CAPI_H

#include <stddef.h>
#include <stdint.h>

#define RTML_SERVER_CAPI_VERSION 1
#define RTML_SERVER_CAPI_CAPSULE "rtml._core._server_capi"

/* Actions of session_handle (rtml::server::Session::Action). */
#define RTML_ACTION_CONTINUE 0 /* read more */
#define RTML_ACTION_DEFER 1    /* the frame at `consumed` is the caller's */
#define RTML_ACTION_CLOSE 2    /* write the output, then close */

typedef struct rtml_server_capi {
  uint32_t version;
  uint32_t struct_size;
  /* A new session on an engine (the address rtml._core.Engine.address()
   * gives); NULL when out of memory. */
  void* (*session_new)(uintptr_t engine);
  void (*session_free)(void* session);
  /* Handles up to max_frames complete frames of in[0, n); returns the bytes
   * consumed, sets *action and *frames. */
  size_t (*session_handle)(void* session, const uint8_t* in, size_t n, size_t max_frames, int* action,
                           size_t* frames);
  /* The deferred frame: header fields, payload offset from the frame start. */
  void (*session_deferred)(void* session, uint16_t* opcode, uint64_t* request_id, uint32_t* payload_len);
  /* The pending output; session_clear_out after writing it. */
  const char* (*session_out)(void* session, size_t* len);
  void (*session_clear_out)(void* session);
  /* Appends a response frame; 0 on success, -1 when out of memory. */
  int (*session_append_out)(void* session, const uint8_t* data, size_t n);
} rtml_server_capi;

#endif /* RTML_SERVER_CAPI_H */
