"""The six pipeline functions. Each `functions/<step>/handler.py` holds a pure handler and its
`STEP`; `functions/<step>/app.py` its HTTP entry; `functions/<step>/func.yaml` its Knative build."""
