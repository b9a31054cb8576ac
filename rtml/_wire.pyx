# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The server's per-connection protocol: bytes in, the core handles every complete
frame, bytes out (one write per read batch).

``ConnectionCore`` is a cdef class so that the event loop's ``get_buffer`` /
``buffer_updated`` calls run C code; it reaches the C++ engine through the C API
capsule ``rtml._core._server_capi`` (bindings/server_capi.h), never through
Python. ``rtml.server`` subclasses it together with ``asyncio.BufferedProtocol``.

Per-connection memory is bounded: the receive buffer grows only to hold one
frame of the largest allowed size (plus a read chunk) and shrinks back when
empty; reading pauses while the transport's write buffer is above its high-water
mark (backpressure) and while a batch of ``max_in_flight`` frames is handled.
"""

from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.pycapsule cimport PyCapsule_GetPointer
from libc.stddef cimport size_t
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, uintptr_t

cdef extern from "server_capi.h":
    ctypedef struct rtml_server_capi:
        uint32_t version
        uint32_t struct_size
        void* (*session_new)(uintptr_t engine) nogil
        void (*session_free)(void* session) nogil
        size_t (*session_handle)(void* session, const uint8_t* data, size_t n, size_t max_frames,
                                 int* action, size_t* frames) nogil
        void (*session_deferred)(void* session, uint16_t* opcode, uint64_t* request_id,
                                 uint32_t* payload_len) nogil
        const char* (*session_out)(void* session, size_t* n) nogil
        void (*session_clear_out)(void* session) nogil
        int (*session_append_out)(void* session, const uint8_t* data, size_t n) nogil
    int RTML_SERVER_CAPI_VERSION
    int RTML_ACTION_CONTINUE
    int RTML_ACTION_DEFER
    int RTML_ACTION_CLOSE

from rtml import _core

cdef const rtml_server_capi* _api = <const rtml_server_capi*>PyCapsule_GetPointer(
    _core._server_capi, b"rtml._core._server_capi")
if _api.version != RTML_SERVER_CAPI_VERSION or _api.struct_size < sizeof(rtml_server_capi):
    raise ImportError(
        f"rtml._wire was built for server C API version {RTML_SERVER_CAPI_VERSION}, "
        f"rtml._core provides {_api.version}: reinstall rtml"
    )

cdef enum:
    HEADER_SIZE = 24
    READ_CHUNK = 65536


cdef class ConnectionCore:
    """One connection's protocol state (see the module docstring).

    ``host`` is the Python object that answers deferred frames (STATS, MODEL_LOAD,
    MODEL_SWAP) with ``host._deferred(opcode, request_id, payload) -> bytes`` and
    tracks connections with ``host._connection_made(conn)`` /
    ``host._connection_lost(conn)``.
    """

    cdef void* _session
    cdef bytearray _buf
    cdef Py_ssize_t _start
    cdef Py_ssize_t _end
    cdef size_t _max_frames
    cdef Py_ssize_t _max_buffer
    cdef object _host
    cdef object _loop
    cdef public object transport
    cdef bint _paused_writing
    cdef bint _scheduled
    cdef bint _closing
    cdef public double last_activity

    def __cinit__(self, *args, **kwargs):
        self._session = NULL

    def __init__(self, host, uintptr_t engine, size_t max_in_flight, Py_ssize_t max_payload):
        self._session = _api.session_new(engine)
        if self._session == NULL:
            raise MemoryError("cannot allocate a server session")
        self._host = host
        self._loop = None
        self._max_frames = max_in_flight
        self._max_buffer = max_payload + HEADER_SIZE + READ_CHUNK
        self._buf = bytearray(READ_CHUNK)
        self._start = 0
        self._end = 0
        self.transport = None
        self._paused_writing = False
        self._scheduled = False
        self._closing = False
        self.last_activity = 0.0

    def __dealloc__(self):
        if self._session != NULL:
            _api.session_free(self._session)
            self._session = NULL

    # -- asyncio.BaseProtocol ---------------------------------------------------------

    def connection_made(self, transport):
        import asyncio
        import socket

        self.transport = transport
        self._loop = asyncio.get_running_loop()
        self.last_activity = self._loop.time()
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self._host._connection_made(self)

    def connection_lost(self, exc):
        self._closing = True
        self.transport = None
        self._host._connection_lost(self)

    def pause_writing(self):
        self._paused_writing = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self):
        self._paused_writing = False
        if self.transport is not None and not self._closing:
            self.transport.resume_reading()
            self._process()

    def eof_received(self):
        # The peer stopped sending. A partial frame left in the buffer can never
        # complete: say so (the peer may still read), then close our side too.
        cdef Py_ssize_t partial = self._end - self._start
        if partial > 0 and self.transport is not None and not self._closing:
            self.transport.write(_core.wire.encode_error(
                0, 0, _core.wire.STATUS["MALFORMED"],
                f"the connection ended inside a frame ({partial} bytes of it received)", True))
        return False

    # -- asyncio.BufferedProtocol -----------------------------------------------------

    def get_buffer(self, Py_ssize_t sizehint):
        cdef Py_ssize_t size = len(self._buf)
        if self._start == self._end:
            self._start = 0
            self._end = 0
            if size > 4 * READ_CHUNK:  # shrink after a large frame
                self._buf = bytearray(READ_CHUNK)
                size = READ_CHUNK
        elif size - self._end < READ_CHUNK // 4:
            if self._start > 0:  # move the partial frame to the front
                self._buf[0:self._end - self._start] = self._buf[self._start:self._end]
                self._end -= self._start
                self._start = 0
            if size - self._end < READ_CHUNK // 4 and size < self._max_buffer:
                self._buf.extend(bytes(min(size, self._max_buffer - size)))
                size = len(self._buf)
        return memoryview(self._buf)[self._end:]

    def buffer_updated(self, Py_ssize_t nbytes):
        self._end += nbytes
        self._process()

    # -- handling ---------------------------------------------------------------------

    cdef _process(self):
        cdef int action = RTML_ACTION_CONTINUE
        cdef size_t frames = 0
        cdef size_t consumed
        cdef const uint8_t* data
        cdef size_t n
        cdef uint16_t opcode
        cdef uint64_t request_id
        cdef uint32_t payload_len
        cdef const char* out
        cdef size_t out_len
        cdef bytes reply
        if self._closing or self.transport is None:
            return
        if self._loop is not None:
            self.last_activity = self._loop.time()
        while True:
            data = <const uint8_t*>(<char*>self._buf) + self._start
            n = <size_t>(self._end - self._start)
            with nogil:
                consumed = _api.session_handle(self._session, data, n, self._max_frames, &action,
                                               &frames)
            self._start += consumed
            if action != RTML_ACTION_DEFER:
                break
            _api.session_deferred(self._session, &opcode, &request_id, &payload_len)
            payload = PyBytes_FromStringAndSize(<char*>self._buf + self._start + HEADER_SIZE,
                                                payload_len)
            reply = self._host._deferred(opcode, request_id, payload)
            if _api.session_append_out(self._session, <const uint8_t*><char*>reply,
                                       len(reply)) != 0:
                raise MemoryError("cannot buffer a server response")
            self._start += HEADER_SIZE + payload_len
        out = _api.session_out(self._session, &out_len)
        if out_len != 0:
            self.transport.write(PyBytes_FromStringAndSize(out, out_len))
            _api.session_clear_out(self._session)
        if action == RTML_ACTION_CLOSE:
            self._closing = True
            self.transport.close()
            return
        if self._start == self._end:
            self._start = 0
            self._end = 0
        elif frames == self._max_frames and not self._scheduled and not self._paused_writing:
            # More complete frames may wait: let other connections run first.
            self._scheduled = True
            self.transport.pause_reading()
            self._loop.call_soon(self._resume)

    def _resume(self):
        self._scheduled = False
        if self.transport is None or self._closing:
            return
        if not self._paused_writing:
            self.transport.resume_reading()
        self._process()

    def buffered_bytes(self):
        """Bytes received but not yet handled (a partial frame)."""
        return self._end - self._start
