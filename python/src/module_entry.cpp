// The module's entry point, alone in its object file: everything else is linked from an archive
// whose symbols stay local to the module (python/CMakeLists.txt says why).
#include <nanobind/nanobind.h>

namespace attncheck::python {
void define_module(nanobind::module_& m);
}

NB_MODULE(_engine, m) { attncheck::python::define_module(m); }
