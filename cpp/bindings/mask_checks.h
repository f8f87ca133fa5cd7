// The `masks` argument of the recurrent cells' bindings (dropout, weight-drop and zoneout masks, issue 15),
// checked like every other argument (checks.h).
#pragma once

#include <algorithm>
#include <string>
#include <vector>

#include "bindings/checks.h"
#include "rnnext/time_loop.h"

namespace rnnext::bindings {

// The masks of the regularisers (rnnext::Masks, time_loop.h) from a cell's `masks` argument: None, or a dict
// with any of "input" [N, I], "state" [N, H], "weight" [H, G*H] (dropout masks, used as given), and the cell's
// zoneout keys ("zoneout_h", and "zoneout_c" for the LSTM): a rate in [0, 1) (evaluation: the expectation) or
// keep masks [T, N, H] with values in [0, 1] (training: 1 keeps the previous value). The arrays stay alive
// with this object.
template <typename Scalar>
class MaskArgs {
 public:
  struct Sizes {
    py::ssize_t T, N, I, H, GH;
    std::string gates_label;  // "4*H", ...
    py::ssize_t P = 0;        // h's width when it is not H (an LSTM with projection): state [N, P], weight
                              // [P, G*H], zoneout_h [T, N, P]; zoneout_c keeps [T, N, H]
  };

  MaskArgs(const Args& args, const py::handle& obj, const Sizes& s, const std::vector<std::string>& zoneout_keys) {
    if (obj.is_none()) return;
    if (!py::isinstance<py::dict>(obj))
      args.fail_type("masks must be None or a dict of masks, got " + std::string(py::str(py::type::of(obj))));
    std::string known = "'input', 'state', 'weight'";
    for (const auto& key : zoneout_keys) known += ", '" + key + "'";
    for (auto item : py::reinterpret_borrow<py::dict>(obj)) {
      const std::string key = py::str(item.first);
      const bool zoneout = std::find(zoneout_keys.begin(), zoneout_keys.end(), key) != zoneout_keys.end();
      if (item.second.is_none()) continue;
      if (key == "input") {
        masks_.input = keep(args.array<Scalar>("masks['input']", item.second, {{"N", s.N}, {"I", s.I}}));
      } else if (key == "state") {
        masks_.state = keep(args.array<Scalar>("masks['state']", item.second, {{"N", s.N}, state_dim(s)}));
      } else if (key == "weight") {
        masks_.weight =
            keep(args.array<Scalar>("masks['weight']", item.second, {state_dim(s), {s.gates_label.c_str(), s.GH}}));
      } else if (zoneout) {
        (key == "zoneout_h" ? masks_.zoneout_h : masks_.zoneout_c) = zoneout_arg(args, key, item.second, s);
      } else {
        args.fail_value("masks has the key '" + key + "', expected some of " + known);
      }
    }
  }
  const Masks<Scalar>& masks() const { return masks_; }
  bool zoneout() const { return masks_.zoneout_h.active() || masks_.zoneout_c.active(); }

 private:
  static Dim state_dim(const Sizes& s) { return s.P > 0 ? Dim{"P", s.P} : Dim{"H", s.H}; }
  const Scalar* keep(CArray<Scalar> a) {
    owned_.push_back(a);
    return a.data();
  }
  Zoneout<Scalar> zoneout_arg(const Args& args, const std::string& key, const py::handle& value, const Sizes& s) {
    const std::string name = "masks['" + key + "']";
    if (!py::isinstance<py::array>(value)) {
      double rate = 0;
      try {
        rate = value.cast<double>();
      } catch (const py::cast_error&) {
        args.fail_type(name + " must be a rate (a number) or an array of keep masks (T, N, H), got " +
                       std::string(py::str(py::type::of(value))));
      }
      if (!(rate >= 0 && rate < 1)) args.fail_value(name + " is " + std::to_string(rate) + ", expected a rate in [0, 1)");
      return {nullptr, Scalar(rate)};
    }
    const Dim units = key == "zoneout_h" ? state_dim(s) : Dim{"H", s.H};  // zoneout_c keeps H under a projection
    auto a = args.array<Scalar>(name.c_str(), value, {{"T", s.T}, {"N", s.N}, units});
    const Scalar* data = a.data();
    for (py::ssize_t k = 0; k < a.size(); ++k)
      if (!(data[k] >= 0 && data[k] <= 1)) args.fail_value(name + " holds " + std::to_string(double(data[k])) +
                                                           ", expected keep masks with values in [0, 1]");
    return {keep(a), Scalar(0)};
  }

  std::vector<CArray<Scalar>> owned_;
  Masks<Scalar> masks_;
};

}  // namespace rnnext::bindings
