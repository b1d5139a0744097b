/*
 * The C half of leakgate's self-tests (built by build.rs, linked into the test targets
 * only): C code that allocates through malloc, as an engine written in C does. One
 * function keeps every block it allocates, the other frees what it allocates; the C heap
 * finding of the first must name it as its top site, and the second must pass.
 */
#include <stdlib.h>
#include <string.h>

/* A cache that is never evicted: each entry is one block, chained to the previous. */
struct entry {
	struct entry *next;
	unsigned char payload[];
};

static struct entry *cache_head = NULL;

/* Where the scratch buffer was: so no optimiser can drop its malloc and free as unused. */
static void *volatile last_scratch = NULL;

/* Inserts an entry of `size` payload bytes and keeps it for good. 0, or -1 without memory. */
int selftest_c_cache_insert(size_t size) {
	struct entry *entry = malloc(sizeof *entry + size);
	if (entry == NULL) {
		return -1;
	}
	memset(entry->payload, 0xA5, size);
	entry->next = cache_head;
	cache_head = entry;
	return 0;
}

/* A log kept in one buffer that realloc grows and never shrinks. */
static unsigned char *log_buffer = NULL;
static size_t log_length = 0;

/* Appends `size` bytes to the log. 0, or -1 without memory. */
int selftest_c_log_append(size_t size) {
	unsigned char *grown = realloc(log_buffer, log_length + size);
	if (grown == NULL) {
		return -1;
	}
	memset(grown + log_length, 0x3C, size);
	log_buffer = grown;
	log_length += size;
	return 0;
}

/* Fills a scratch buffer of `size` bytes and frees it. 0, or -1 without memory. */
int selftest_c_scratch_buffer(size_t size) {
	unsigned char *buffer = malloc(size);
	if (buffer == NULL) {
		return -1;
	}
	memset(buffer, 0x5A, size);
	last_scratch = buffer;
	free(buffer);
	return 0;
}
