// An importable module whose only job is to load this shared library, so that
// `import gaave_fast._C` runs the op registrations (TORCH_LIBRARY*) it holds.
// Kept apart from the ops so that the CMake build needs no Python headers.
#include <Python.h>

extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}
