"""ferricorn's WSGI plugin, the part written in Python: finding the application the way
gunicorn does (``module:callable``, ``module:factory(args)``) and describing errors in one
line. Loaded by the plugin as the module ``ferricorn_wsgi``."""

import ast
import importlib
import sys
import traceback


class AppError(Exception):
    """The application could not be found; the message is the whole story."""


def _where(error):
    """``file:line`` of the innermost frame of ``error`` outside the import machinery."""
    if isinstance(error, SyntaxError) and error.filename:
        return "%s:%s" % (error.filename, error.lineno)
    frames = [f for f in traceback.extract_tb(error.__traceback__)
              if not f.filename.startswith("<frozen")]
    if frames:
        return "%s:%s" % (frames[-1].filename, frames[-1].lineno)
    return ""


def describe(error):
    """One line for ``error``: its type, its message and where it was raised."""
    if isinstance(error, AppError):
        return str(error)
    text = "%s: %s" % (type(error).__name__, error)
    where = _where(error)
    return "%s (%s)" % (text, where) if where else text


def _parse(expr):
    """(name, args, kwargs) of ``name`` or ``name(literal, ...)``; args is None for a name."""
    try:
        node = ast.parse(expr, mode="eval").body
    except SyntaxError:
        raise AppError("failed to parse %r as an attribute name or function call" % expr)
    if isinstance(node, ast.Name):
        return node.id, None, None
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        try:
            args = [ast.literal_eval(arg) for arg in node.args]
            kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords}
        except ValueError:
            raise AppError("failed to parse arguments as literal values in %r" % expr)
        return node.func.id, args, kwargs
    raise AppError("failed to parse %r as an attribute name or function call" % expr)


def load(spec):
    """The WSGI callable that ``spec`` (``module[:expr]``, gunicorn's syntax) names."""
    module, _, expr = spec.partition(":")
    name, args, kwargs = _parse(expr or "application")
    try:
        mod = importlib.import_module(module)
    except Exception as error:
        if isinstance(error, ModuleNotFoundError) and error.name == module.split(".")[0]:
            raise AppError("cannot import %r: %s (sys.path: %s)" % (module, error, sys.path))
        raise AppError("cannot import %r: %s" % (module, describe(error)))
    try:
        app = getattr(mod, name)
    except AttributeError:
        raise AppError("failed to find attribute %r in %r" % (name, module))
    if args is not None:
        try:
            app = app(*args, **kwargs)
        except Exception as error:
            raise AppError("%s(...) in %r failed: %s" % (name, module, describe(error)))
        if app is None:
            raise AppError("the factory %r in %r returned None" % (name, module))
    if not callable(app):
        raise AppError("the application object %s:%s is not callable" % (module, name))
    return app


def format_error(error, tb=None):
    """The traceback of ``error`` (``tb``, else its own) as gunicorn logs it."""
    tb = tb or error.__traceback__
    return "".join(traceback.format_exception(type(error), error, tb)).rstrip()


def where_python():
    """A line saying which Python runs: version, prefix, virtualenv."""
    version = sys.version.split()[0]
    venv = sys.prefix if sys.prefix != sys.base_prefix else "none"
    return "Python %s (%s), virtualenv: %s" % (version, sys.base_prefix, venv)
