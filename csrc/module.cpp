// The Python module alae_fast._C. Importing it runs the static TORCH_LIBRARY registrations
// of every translation unit; it exports only WITH_CUDA.
#include <Python.h>

static struct PyModuleDef alae_fast_module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};

PyMODINIT_FUNC PyInit__C(void) {
  PyObject* module = PyModule_Create(&alae_fast_module);
  if (module == nullptr) return nullptr;
#ifdef ALAE_FAST_WITH_CUDA
  PyModule_AddIntConstant(module, "WITH_CUDA", 1);
#else
  PyModule_AddIntConstant(module, "WITH_CUDA", 0);
#endif
  return module;
}
