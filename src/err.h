/* err.h: the one project error enum and its mapping to HTTP status and error code.
 *
 * Every fallible function returns enum lh_err; LH_OK is zero. The table in err.c is the only
 * place an error becomes an HTTP status, so a new error kind is added in exactly two spots.
 * Thread-safe: pure functions over constant data.
 */
#ifndef LH_ERR_H
#define LH_ERR_H

enum lh_err {
	LH_OK = 0,
	LH_EINVAL,     /* 400 a field has the wrong type or value */
	LH_EJSON,      /* 400 the body is not JSON */
	LH_EUNAUTH,    /* 401 credentials or token rejected */
	LH_ENOTFOUND,  /* 404 no such resource for this caller */
	LH_EMETHOD,    /* 405 path exists, method does not */
	LH_ECONFLICT,  /* 409 the change collides with existing state */
	LH_ETOOBIG,    /* 413 body over the cap */
	LH_ERATE,      /* 429 too many failures, retry later */
	LH_ENOMEM,     /* 500 allocation failed */
	LH_ESTORE,     /* 500 the store failed (disk, corruption) */
	LH_EIO,        /* 500 other system error */
	LH_EFULL,      /* 503 the store's disk is full: nothing applied, retry later */
	LH_EDISK,      /* 503 the store's disk failed to write or sync: nothing applied */
	LH_EUNAVAIL,   /* 503 the store (a database server) cannot be reached: nothing applied */
	LH_EFORBIDDEN, /* 403 a link's signature is wrong or expired */
	LH_EMEDIA,     /* 415 a body of a type the route does not take */
	LH_ERANGE,     /* 416 a Range that the representation cannot satisfy */
	LH_ERR__COUNT
};

/* HTTP status for an error (200 for LH_OK). */
int err_http_status(enum lh_err e);
/* Default snake_case code for an error; callers may send a more specific one. */
const char *err_code(enum lh_err e);

#endif
