// Bindings for the steppers that lstm_stepper, gru_stepper and rnn_stepper return (bindings/stepper.h).
#include "bindings/stepper.h"

namespace rnnext::bindings {

void bind_stepper(py::module_& m) {
  // module_local: each instruction set's extension registers its own Stepper, so two can share a process.
  py::class_<StepperHandle>(m, "Stepper", py::module_local(),
                            "A stack of single-direction recurrent layers stepped one time step at a time, with its "
                            "own copies of the weights packed once (made by lstm_stepper, gru_stepper, rnn_stepper).")
      .def("step", &StepperHandle::step, py::arg("x"), py::arg("states"),
           "x [N, I] and states (one tuple of the cell's states [N, H] per layer) -> (y [N, H], new states)")
      .def_property_readonly("batch_size", &StepperHandle::batch_size);
}

}  // namespace rnnext::bindings
