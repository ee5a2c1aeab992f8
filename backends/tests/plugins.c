/* Deliberately broken plug-ins, one per loader failure; the variant is chosen by a macro. */
#include <stdlib.h>

#include "attncheck/backend.h"

#if defined(ATTNCHECK_TEST_PLUGIN_NO_ENTRY)
/* A shared library that exports something, but not the entry symbol. */
ATTNCHECK_EXPORT int attncheck_not_the_entry(void) { return 42; }

#elif defined(ATTNCHECK_TEST_PLUGIN_NULL_ENTRY)
/* The entry exists but fails to make a table. */
ATTNCHECK_EXPORT attncheck_backend* attncheck_backend_entry(void) { return NULL; }

#elif defined(ATTNCHECK_TEST_PLUGIN_WRONG_MAJOR)
/* A table from a future ABI: only the frozen first field may be trusted, so the loader must stop
 * there. The rest is zero on purpose. */
static attncheck_backend future_table;
ATTNCHECK_EXPORT attncheck_backend* attncheck_backend_entry(void) {
  future_table.abi_version.major = ATTNCHECK_ABI_VERSION_MAJOR + 1;
  future_table.abi_version.minor = 0;
  return &future_table;
}
#elif defined(ATTNCHECK_TEST_PLUGIN_ABI_1)
/* What a plug-in built against attncheck 1's backend.h hands out: major 1 in the frozen first
 * field. Its table and structs have no device and no struct_size, so nothing past abi_version is
 * read; the loader says what to change. */
static attncheck_backend old_table;
ATTNCHECK_EXPORT attncheck_backend* attncheck_backend_entry(void) {
  old_table.abi_version.major = 1;
  old_table.abi_version.minor = 0;
  return &old_table;
}
#endif
