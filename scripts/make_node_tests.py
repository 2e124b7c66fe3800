#!/usr/bin/env python3
"""Materialise the ONNX node conformance cases shipped in the pip `onnx` package.

`onnx.backend.test.case.node.collect_testcases()` builds every node test case in memory (model
plus input/expected-output arrays). This writes each one in the ONNX backend-test layout that
`tessera onnx-test` reads:

    OUT/<case>/model.onnx
    OUT/<case>/test_data_set_<n>/input_<k>.pb, output_<k>.pb   (TensorProto, named)
    OUT/<case>/tolerance.json                                   ({"rtol": .., "atol": ..})

Cases whose inputs or outputs are not plain tensors (sequences, optionals, maps) are skipped and
listed at the end. Usage: python3 scripts/make_node_tests.py OUT_DIR [--only SUBSTRING ...]
Needs: pip install -r scripts/requirements-test.txt
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import warnings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="folder to write the cases into")
    parser.add_argument("--only", nargs="+", metavar="SUBSTRING", help="only cases whose name contains one of these")
    args = parser.parse_args()
    try:
        import numpy as np
        import onnx
        from onnx import numpy_helper
        from onnx.backend.test.case.node import collect_testcases
    except ImportError as e:
        print(f"error: {e}; run: pip install -r scripts/requirements-test.txt", file=sys.stderr)
        return 1

    with warnings.catch_warnings():
        # Some case generators divide by zero on purpose (inf results are part of the test).
        warnings.simplefilter("ignore")
        cases = collect_testcases(None)
    os.makedirs(args.out_dir, exist_ok=True)
    written, skipped = 0, []
    for case in cases:
        if args.only and not any(s in case.name for s in args.only):
            continue
        model = case.model
        graph_inputs = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
        graph_outputs = [o.name for o in model.graph.output]
        tmp = tempfile.mkdtemp(prefix=f".{case.name}.", dir=args.out_dir)
        try:
            onnx.save(model, os.path.join(tmp, "model.onnx"))
            ok = True
            for n, (inputs, outputs) in enumerate(case.data_sets):
                d = os.path.join(tmp, f"test_data_set_{n}")
                os.makedirs(d)
                for kind, names, arrays in (("input", graph_inputs, inputs), ("output", graph_outputs, outputs)):
                    for k, arr in enumerate(arrays):
                        name = names[k] if k < len(names) else f"{kind}_{k}"
                        if isinstance(arr, onnx.TensorProto):
                            # Some cases (casts to float8, bfloat16, ...) store TensorProtos.
                            tensor = onnx.TensorProto()
                            tensor.CopyFrom(arr)
                            tensor.name = name
                        elif isinstance(arr, np.ndarray) or np.isscalar(arr):
                            tensor = numpy_helper.from_array(np.asarray(arr), name=name)
                        else:
                            ok = False
                            break
                        with open(os.path.join(d, f"{kind}_{k}.pb"), "wb") as f:
                            f.write(tensor.SerializeToString())
            if not ok:
                skipped.append(case.name)
                shutil.rmtree(tmp)
                continue
            with open(os.path.join(tmp, "tolerance.json"), "w") as f:
                json.dump({"rtol": float(case.rtol), "atol": float(case.atol)}, f)
            final = os.path.join(args.out_dir, case.name)
            if os.path.exists(final):
                shutil.rmtree(final)
            os.rename(tmp, final)
            written += 1
        except Exception as e:  # a case numpy_helper cannot serialise (e.g. string tensors)
            skipped.append(f"{case.name} ({type(e).__name__})")
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"wrote {written} node test cases to {args.out_dir} (onnx {onnx.__version__}); "
          f"{len(skipped)} not plain tensors: {', '.join(skipped[:10])}{' ...' if len(skipped) > 10 else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
