/* err.c: the table from project errors to HTTP status and default error code. */
#include "err.h"

static const struct {
	int status;
	const char *code;
} err_table[LH_ERR__COUNT] = {
    [LH_OK] = {200, "ok"},
    [LH_EINVAL] = {400, "invalid_request"},
    [LH_EJSON] = {400, "invalid_json"},
    [LH_EUNAUTH] = {401, "unauthorized"},
    [LH_ENOTFOUND] = {404, "not_found"},
    [LH_EMETHOD] = {405, "method_not_allowed"},
    [LH_ECONFLICT] = {409, "conflict"},
    [LH_ETOOBIG] = {413, "payload_too_large"},
    [LH_ERATE] = {429, "rate_limited"},
    [LH_ENOMEM] = {500, "out_of_memory"},
    [LH_ESTORE] = {500, "store_error"},
    [LH_EIO] = {500, "internal_error"},
    [LH_EFULL] = {503, "storage_full"},
    [LH_EDISK] = {503, "storage_unavailable"},
    [LH_EUNAVAIL] = {503, "store_unavailable"},
    [LH_EFORBIDDEN] = {403, "forbidden"},
    [LH_EMEDIA] = {415, "unsupported_media_type"},
    [LH_ERANGE] = {416, "range_not_satisfiable"},
};

int err_http_status(enum lh_err e)
{
	return (unsigned)e < LH_ERR__COUNT ? err_table[e].status : 500;
}

const char *err_code(enum lh_err e)
{
	return (unsigned)e < LH_ERR__COUNT ? err_table[e].code : "internal_error";
}
