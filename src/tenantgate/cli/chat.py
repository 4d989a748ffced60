"""``tenantgate chat``: an interactive client that streams replies through the gateway with the openai SDK."""

from __future__ import annotations

from typing import TextIO


def chat_loop(*, model: str, base_url: str, key: str, system: str | None, stdin: TextIO) -> int:
    try:
        import openai
    except ImportError:
        print("tenantgate chat needs the 'openai' package: pip install openai")
        return 2
    client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=1)
    history: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    interactive = stdin.isatty()
    while True:
        if interactive:
            print("> ", end="", flush=True)
        line = stdin.readline()
        if not line or line.strip() in ("exit", "quit"):
            return 0
        if not line.strip():
            continue
        history.append({"role": "user", "content": line.strip()})
        try:
            stream = client.chat.completions.create(
                model=model,
                messages=history,  # type: ignore[arg-type]
                stream=True,
            )
            reply = []
            for chunk in stream:
                choices = getattr(chunk, "choices", None)
                piece = choices[0].delta.content if choices else None
                if piece:
                    reply.append(piece)
                    print(piece, end="", flush=True)
            print()
            history.append({"role": "assistant", "content": "".join(reply)})
        except openai.APIStatusError as exc:
            print(f"error {exc.status_code}: {exc.message}")
            history.pop()
        except openai.APIConnectionError as exc:
            print(f"cannot reach the gateway at {base_url}: {exc}")
            return 1
