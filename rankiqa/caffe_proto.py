"""Caffe's message types (``NetParameter``, ``BlobProto`` ...) without pycaffe.

``caffe_pb2`` ships inside pycaffe, which only a Caffe build provides; reading a prototxt or a caffemodel
needs nothing but the message types. This module holds the compiled descriptor of Caffe's
``src/caffe/proto/caffe.proto`` as built by dev/build_caffe.sh (Debian's caffe source
1.0.0+git20180821.99bd997, BVLC Caffe 1.0), zlib-compressed and base64-encoded, and builds the message
classes from it in a private descriptor pool (so that they never clash with pycaffe's own, registered in
the default pool). ``rankiqa.caffe_io.caffe_pb2`` uses pycaffe's module when Caffe imports and this one
otherwise; tests/test_onnx_export.py checks that both hold the same descriptor.
"""

from __future__ import annotations

import base64
import functools
import types
import zlib

#: ``FileDescriptorProto`` of caffe/proto/caffe.proto, serialised, zlib-compressed, base64.
_DESCRIPTOR = (
    "eNq1W1lzG0lyHhwkwcLVBEkRuqUeSaPRrjgkR5xZcby7BglQQhgEYACkdjbCRjSBBtAWgIZxiOT4XN+79q7PCL86wvab/erwo+1X"
    "+wc4/OTXsf+CHeHMrKrurgZADTVrvQhdlXVl5fFlVpJtNIxWy/xoMLTH9kf0e5N+pxboQ7/Flve79mm1YwzMVJKFmlYvHbgXehza"
    "D2oB/d8CvLtMQ+6yhRHSpZfuBR5Hd7RNPp87XmPhpjE20gswQRAnoBar1UovOi0bLNq0J6dds06kEegI+DtwxLLTkWCh/gR3FXi8"
    "sBfYSq2ySKNj9Ptmd5QOysYVttgxrXZnnA7JJo0tnFnNcScdFi36Dks6pzkxG2N7iGc6haYRHVo9E5HpPwiwhawxnvRgPndd2gzs"
    "TC5K+0jF5Yq0h1RMsAPXj2Fn1zg1u8Ad7Ewx1uraxpizgfiTusaWzH7DbppNYnFkb6FldEem/qMgSx5a3a45LBtDo2eOzSHQhscX"
    "cBe4k+W9SMPuj8ZGf4ynfmN0JyZtKYh8AP71rD7tyfk2zmlX8L0Ntx7umUaf9iUJRuMm7EkQpNjiaGAMR/ziF/aCT7dT+yz+xhha"
    "Rr9h1vv2sAcXGXic2Hlf8M+3280TQVsE0r3Fw0yxni/qz1jM2w4cET3ae6koW8LfpeMaSAB8ZE5ylcyLnBbUfxJksaI5djkBbO7D"
    "T84JZLPVH0xQDkLw+ZBF6bPOJTcydctcclfYMidD+Q8D0ULqNku07CEc79RovD4zhk1ikLyT1B1QhrExNolN0Z2kmBJ2VsXm1HXG"
    "mubppF23+i1buc7UA5SEC3OYbtJu1sXQAra5x/qALRIVCjmSbQiyk22VUP+SsWTV7r7xDo6CzpjjdJpY8ogtw0d9gL3p67TdVXe7"
    "7iBgwnhoWP06DuXcBJkfm6MxtQSJod9kSYdITLk+f8pvsIQcL4iv0WFmEj9gUT41Z+yN2Yx9nzGakhPdpOmmiPAoSGTBvCQJC6k0"
    "i/OmPrSBijhmIXWPrVBPw+6BCJj1rj0apVe9N3afrYqx1tgyutYXxtiy++l7RBMeDydoO5dOjREMHnJFwoamNRrAHZKILICBixlw"
    "SUZbrHCfr7+NTAaF5HslDUutgTjCV31kfWGmH0g6OFR3WB/YXatxQfpG0t42ej0DzCWuCZ8D+wymYfSJE9s9sw/WKx2lljUWOyOL"
    "VW+aDdhZjFrvstWh2Z50QRn5yepkWm6TaQkWdnCi0dgc0HbitEPYC7ZwU6MTg2+wRKNrDertodG0YNFR+n2yIGguwGaP+sZg1LHH"
    "6YTk+wZLysb6YGi2rPN0kk51i8WdDnIGmvcyfs4zDDS0Z4zTD8n4PBRS4FOGzaqgPiTiveh+vpipfF6ulGql1GcsOiLyeg/sbnqF"
    "Jro/byL6PgLCvdCL8jFeU9N8Y4GNsJrplHus6NDoN+1efWSCJV+D9hAxYUWY7MfE11D1RRaMzELT7IIDuEusSjzffM7/PTOfbj0H"
    "I7MsL3An/QGRRLeQZAv+bX8Mw5eHvZG4y0fUz7B/i/p9NmjDy0SdrTlMNFooa6R66VsekXZ5Q9u+8xV4UwNCfrK7bIXMV/3MAq0Y"
    "ms1Jw0x/qCoMF8VR+glaFh1shXpTqQgLv8we7oI7SDLvrQEyucOYexupJRY6KB8DHfyAi4H+Y9mPO8Jm2BP0x1ikmKvWcpXSifAr"
    "2cyLSiarBfGjclSF+ctaCOmgJ5sr1DJaGPcBX0fagt5lUT4tNzPgekhrORxYZdGuaQz7ZlPYS5Tl+2ypY40AalyQHZoBMdAwNCbD"
    "IVxzHXXKxStF2K20aPdBtTtgYGitxE5MzFLGtr1wDQ6Frr9rvgGE4aCiODmptsmdoT4iz0nzVSZdM3XzkjlRwwE21D0zUhMYKt4U"
    "kpCHrxAm7wAUfZtsMzQt0KJ/DRiSxKQ6MBs+Z73NGPjlocmVL0i7uC13IcdsZq3eQcdsvKarTrElMIK9SXcsEc12ah3lHFSAN0tg"
    "oz9hMWUo4ItqrZI/qIEgJBgr5ypH+Wo1f5IDefmPNZbwOWB1qzGhvPxWAfmd2uOx3RMwA/zt2B4IJjhsZTPYikIC1r/OZZ9DZUSh"
    "3DsuKiLiss2BqUtzZOgaSwCuHxhtuNt60z7rg8EPPY6AT12y+o3upCmxz6rPVZIgAJV5zqmW51N9Sq6/P0KjK7x5k3z0HUFdk73k"
    "RFxOPmaMzszHmDRmTaIe6HApt1jCaIAyGI0LQd0i6rSgzohOd8Q3wasO2yiWnL5N9Nck/bB9ZJy71M+YdmqMGx3CrGLEHwZoyHXJ"
    "U+xHPOqO+pCxU8uQ+/9xQDnAPvQopOQEOelfqKQH0KPsHFB7w5DIqKPs/IC6XOrvsmtADfwfja03HEGIcRaNu+uOk0Qqaz9hKzDB"
    "G7s7IQ/Px/4Sjb3pjpX96olAssSAP/GdCHqUe8ZoRpC+VighhjJcyk0Wb8JQeyIP3yViiXGzvM+l/5hpzUmvd1H3zN9Tri2L3VOL"
    "gG8l/8NH9JVFcrzPi7iXze5E0P5RQEG1ucKxF9VGzd4pmHlO+kNOKnF8DrtcYkDf5rlkn61Oeu5h3kcs3uoa47Ep7+b3A8p2D3mn"
    "O2CbJTvN1q6XJQNFWdB3qhzZZSs0BHg7cFj/yzTohmdQiboV7nesfluRuqHC/ZfYrcobDLJ6CHY9+xspg/LYrW7wOVtFrNLGKMCz"
    "2JjG3ZLjBIW6Hg3tA+AAOwhgQ55u4hsKFGVOoNwnj/74kD9W7zPfV5gBUtK124L091QpKdht5eK7Q3mZb1S6SlG5lJ7ZA4Dg5dSZ"
    "cilH1K+yCqbvvZHTnyvTH50UvfeQHMgPQf2nqsVzaBXVGdgQaPTlQS8UWSzzPpf+CYtS4CGov1AYWMYehduA9h1F+22V2+WK6VW1"
    "pyw2uBh3HIP1WwHFSpapTzns0JRgio/4M/WwFdntG4QS4drFP/APEt2KrfMc4lcUW6ceARR7aFL6QRD/rqrYFd6pMGjUMLqS/Ccq"
    "g6rYpdzUyGr3bEtao19VJq/yPpXebo1dh/lrKj3vU8R9NJDm63dUca+Wy4oIjLoYC3HSX1c3jT3qCcH2dgTtn/tOiF0Kp8dGX9L+"
    "hsLpmtF/qVzkuIO8truSG7+pXmRNdiv+bWw5zP6R6t9qlpfX4ELPLIjszrya+oOAoqqviEBRVf0fAmxjHjYC0E6XTTBToNnFnjUc"
    "2kPCmk7EBsEm+WEKwhH6xnnecxmTd/UWbJSQ7zJmFqmJx+YcYN5gUZ7MathdmHjROzFEibwPAvcLNfH4LwEWV63sGotZbQBP4Aso"
    "mckjnyyLI6ByMyMhQr6PZmG8zaKXkoLphZNMIZ/lwQPv4zg7ou+zlSlyDMcOjwsFQPHLjA+lLDHbz9QOXtar+e/nIJwDomKpmNNC"
    "eoGtTMNGYDsA9vprOkBcpEGNc8tJKW9PHZUCHv2IJf2gEpiLQAZVCvNKAS9znXWCcp2YWIdP9yGLq6gwyrO1gXvBx0H6MM5hLHzo"
    "z1nSDwqn9gyRkMCUPJHP19QvWGoGrE0zbQLYqA1BhNGlfBpPbEcAmm707Ddo/WXGqgXso5sNTmchbrKQORiJcMxJYXy6az7d+kT/"
    "BRZXEbLcc0DueZVF+pNe3Tg3PQd5xBZblEOmaV2D70ssw+Wm5yLeFVAkiA2Im0K3brNE12xjdAHnGsnzOPL+PyG2NhMEg07hHjlu"
    "4nyFsH2ZogLo74lpeGYDbm1gNCkyjGO899oc9s0uV9wwNUL4OBoPraZJAV8c82tNq8tVJyVaICJs1juU2IuL5wxsOaOoUrRExNQd"
    "Su/FPS1nlNqL88wdrgQ0cV/LGaXiaK320J4MKHFJMvqUxUWaUFzC0mWXgOacOCGII5cSf8YWzT5ciknJvsSOfknwsZkjyr2lbO4w"
    "c1yoOcKjSTm5w5LcePWbdau3A+aNcnjOjX6DLfI5ML8jZuGG4yBzeAiRP/08zhaLWlDfAmVUAhqfrO7gxdmt1khkw+P63wRZXIVl"
    "eLX2BHYk8gYgOTziFNePDAdTjhnC+ui1NSDW0nVuYwa58drsN8Vjysas0Gkzu7+3VMid5ArZfdd5BKWAK/4gRDtQHMeCXM31Motq"
    "XnCV81M8RAmHseylAYXFdK0Jp5LC+Ey/yYKwIWCy2BswGUxw4Qh+BfRNpk2FdDfcEHCIki+UNLS1uav/VYClZgR0IGfkeIWc8Se7"
    "eXLmvFYuznnzifJ3xaDUQOdxLyR1VDzucZ11HvcW6Ob/NsC0qQjyOVu2B+aQK3JAyZf6aWVDabAXqh4f4fQN22y1aD9BkGsNDDK+"
    "hmI4Qzl1uk5hY3SAZc4EyOhypZTl+U+YDKQafhxlvgcyfY/FlNgVRMboDjqGYxP1vwuwhC9mnWXulCey4LQF9Oxu2n6Er2I/Fi61"
    "+Fk4kDdu1lj4VOYw+WPDtFZgS8dqOSnDLXCm2lRAPeWZ1lgEtLHucbEwvV5iK9OR9eVqz9l1jS2NOpNWS2imY6Mes9VZUTcwHLW4"
    "7iYh9V9kqRmR9hYL0xMsF7g7c0NyQl57wcK2fg3AEb64LjL4AmnB/3dAWP4yyFIzonL/4danbRpn1yyz5jl1xGtFYJK+eVYXOua4"
    "uTV8rDyrc1Vj7iQRayRsUdQjaD99A7jOokObXpa6TZDFGL3VvKd/i63PTjv4eeOHZPq/BnDorLTDlUDFlEqFrqJSl+uf3POCFPw0"
    "vQT3RwN7ZCrs0bdZwpcPcexsYLadRYVV8iLvprD/GIRpvGmTdUwqNwyBqwTU3XXtW9AtXwifmmNDTBXe2vx0FwKWKGWAh2YbTXVY"
    "0RzvMqQzFaLaS2YOKqVqtX7wMlMs5gpVgPKB17JsYhuiTwlsFmm6G7Om8wEafZcxdwXwrP41wKanWOJVvvYyX5SN4FCvBGu+z1Zn"
    "JZBUExWQ4FCprfG6QYo5XTdIaq/3WEzJNt1jKSeGq8sKEREScUEGxGaAOo5Anb0rOQo4J5rYMZ9ubwG7UjOyVR4RnFmYpP8gzLSp"
    "nNUuC2OOS5hNfU5qixqOzHHHbu6hS8XqGET3YR8uvxSp+4KAoA+sd7hVUuD7onC6MlAISSvrRfRLU4g+Qi2fOqIYVSR76nB+fA3x"
    "kQgHRfqPDKBzN58xBoECmHh6r4srAGdq7gpSUnwfPsjlCwACmctLCVAIsmTwCQ4j+GqtBDJereUPQGyvJOP32LKzHuIhXJETHxZK"
    "pQqozCFL+BKRmqyWCHjNztsMUZsl/VlH0BFgyKTrqUHiBT78sXCVLVOqCEJsbrbBoWDRCX/6tHjOESwyL0lxTO0/AQieka1cn/Ya"
    "KGJT/iF4Ff9wuTNR6wi8m8RSDfMc3US9YzWbZl8pktL/no4wlTv99jRMfjg30+o2Sajsc7GkcBw7yxdhsBNRzzAXFuNLPv4KomTA"
    "j+rPayFsPMplilpY/3GAxdXk7XWW6Jttg97cRl174OTptlLPHCXjD9c3Z2V/pwz+FS23NpUdfpuxm2bPmifBEnJgLAQwCV8u+aea"
    "mkEQ4UIZRWiuhPfPmTaVxHbtm4p5/YRfj/sFYJCat056c3ecQTLpbVt9kRRAvMkblRzcDyFgnMquzz2Ij3BuIsSBmVc62X04mZpk"
    "TwqQ5ESFQxZXk+vPfFu9OSsF//UY/hGsaV0qkGBZMVkvzq0/YakZGX3gv/MM4Kir/s9BtjojOT8F4L9SSDEnq/PVw4zrLNZq191t"
    "LjnJD+w69XZFvF1RGOXkYpclot3ZhQgpivUB5jm+ezVd6LEhdkUeO0rOJ3xmDAeAs2INo9EBB4QB30h19L4oKC6ioP8OsJjy6INl"
    "JxfwYTVlIMdx5LbAVkFVqj1Dp3DVPPisDPKL1/8rpvjPVab5q209lT9Bb+UPLwOSJUP8IcZTe3PvK9Xe3J9P9ZEoP1pQMJd/d7yG"
    "mErenIqhxTkVQwlZc/TlEu39OyyJA+qegqz/wp7EzoN5qynVVYBCaUGsgF2iHJa/2DRCrb4CqPepcbru5+YV6342Lq378dfaLL9j"
    "rc3jr1Frw95ea6MW0ESvUkATu3oBzY0rF9CkLy+gUUpdPpxf6jKjciX+LpUriXeqXLn9LpUryXesXNHevXJl5StUrig1Jqkr1phc"
    "u1qNiT6/xmSqXGT1SuUi65eVi6iFFncuKbSYKoV4dMVSiA8uL4XwVTjcvazCQS1aeHhJ0cLOdNHC9bfVLOzOKkRYe1sdwqwCzgfv"
    "UMD55JICzkcy9FVrXE62fH+08u9htuw6K/lY/x7W6Gb2qyeZgvY+FWEfHBxXMgefg2PGnsoL9O93kH6/WChAGAetB6XiQaYGcdwa"
    "0+B3rYLO/iRXL5SqVe0hlo5D60mpcFzLl4q8mjubqWU0rGeOZ3Pezg8IFlRKZfy7o0VED9njo6PP60R/DzNxueODQj4L0SKffgkH"
    "5Aq1V/lqTruOuCP3vbL2iP58qZCp1XJFLQKgdRltE58FM8RR+oQ1yrAMw2Ve5osvxI5v4ZnyRzsHpYIWxb78UQb6aHAMt5wvHpZe"
    "ZPJiB3HeVMxV6vgGdHxQ0xK4D1B/LYlrHeWOShVxhNup2+z6EWCefLF0lM8UYIoXeYRGfC6NENRJUdPxAOVSqQDb0lYQE5VLr3IV"
    "7QYyr5IrHGsppKjmXxyV8lltNXWH3RAfdZ6/zME9lMqf83lvcuJCrniQ0x7QR+mwhle5BrAhJj447TpF5uVCvqZdo5+FPAy6jwvX"
    "MsWX2gae6VW+mC294mdKI39rLyu56stSIavdvVLZ9/8uAcTbukLht5qzD4l3nQiGs544d07KfuEqKZnFS4lFFtJ5ZYF98dQhRR8R"
    "9V1/WeYO3XQik00yCxpVsqB+nkyh9anX25gbpaiZ+fhUZj7hz8wnPZl5yqlfkxRucKapwdmKm6CLYHBGsVmKaCBco9iMVl8lTuCf"
    "jMJuqWVtOjJb94Y+DnDemQOcvUD345lA95lo9TyH7cpVbwMQM0EivBHeJy7vRLcSAH7q7U6K0U4Q+C1PEHiDd3sDwT258E24Mexz"
    "gsHPPMFgii3hqxu+h/+M+3dMMWxzsvTflh3qy9133DST5+Xuu7L1NkuI5z8ZaP6s7xXQU7CUkVL5ySy49+XS2/DelePBVyzhKzh1"
    "s1uBSxUQziU4wyOmpvKK8eQWmEz6ew8wYeCR6G9a0YTlqjUt8H8asZWy"
)
#: The proto package of Caffe's messages.
PACKAGE = "caffe"


def descriptor_bytes() -> bytes:
    """The serialised ``FileDescriptorProto`` of caffe.proto (what pycaffe's
    ``caffe_pb2.DESCRIPTOR.serialized_pb`` holds)."""
    return zlib.decompress(base64.b64decode("".join(_DESCRIPTOR)))


@functools.cache
def caffe_pb2() -> types.SimpleNamespace:
    """A stand-in for pycaffe's ``caffe_pb2`` module: every top-level message class of caffe.proto as an
    attribute (``NetParameter``, ``LayerParameter``, ``BlobProto`` ...), built once."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    pool = descriptor_pool.DescriptorPool()
    pool.Add(descriptor_pb2.FileDescriptorProto.FromString(descriptor_bytes()))
    file = pool.FindFileByName("caffe/proto/caffe.proto")
    classes = message_factory.GetMessageClassesForFiles([file.name], pool)
    return types.SimpleNamespace(**{name: classes[f"{PACKAGE}.{name}"]
                                     for name in file.message_types_by_name})
