// A plug-in whose backward pass crashes (ATTNCHECK_BROKEN_BACKWARD_CRASHES) or never returns
// (ATTNCHECK_BROKEN_BACKWARD_HANGS): an isolated call opens its backend afresh in the child, by
// the path it was loaded from, so the defect must live in a library.
#include "broken_backward.h"

#if defined(ATTNCHECK_BROKEN_BACKWARD_CRASHES)
#define ATTNCHECK_BROKEN_DEFECT Crashes
#define ATTNCHECK_BROKEN_NAME "broken-backward-crashes"
#elif defined(ATTNCHECK_BROKEN_BACKWARD_HANGS)
#define ATTNCHECK_BROKEN_DEFECT Hangs
#define ATTNCHECK_BROKEN_NAME "broken-backward-hangs"
#else
#error "define ATTNCHECK_BROKEN_BACKWARD_CRASHES or ATTNCHECK_BROKEN_BACKWARD_HANGS"
#endif

extern "C" ATTNCHECK_EXPORT attncheck_backend* attncheck_backend_entry(void) {
  return attncheck::impl::make_backend_table<attncheck::broken::BrokenBackward>(
      ATTNCHECK_BROKEN_NAME, "a backward pass that never returns normally", attncheck::broken::Defect::ATTNCHECK_BROKEN_DEFECT,
      nullptr);
}
