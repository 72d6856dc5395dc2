"""Chat over finished results: a LangGraph tool-calling agent.

``answer_question`` asks the model (tools bound); ``run_tools`` executes the
read-only tools it called; the loop ends when the model answers in text or
after ``max_tool_rounds`` rounds (a counter in state, not the recursion limit).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal, TypedDict

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AnyMessage, SystemMessage
from langchain_core.tools import BaseTool
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode
from langgraph.runtime import Runtime

from agent.llm import TRANSPORT_ERRORS


class ChatState(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]
    tool_rounds: int


@dataclass(frozen=True, kw_only=True)
class ChatContext:
    """What one chat session is configured with."""

    system_prompt: str
    max_tool_rounds: int = 6


def build_chat_graph(model: BaseChatModel, tools: list[BaseTool]):
    """Compile the chat agent for ``model`` with the results directory's ``tools``."""
    bound = model.bind_tools(tools)

    def answer_question(state: ChatState, runtime: Runtime[ChatContext]) -> dict:
        """Ask the model, with the system prompt first (prefix caching) and the tools bound."""
        messages = [SystemMessage(content=runtime.context.system_prompt), *state["messages"]]
        try:
            reply = bound.invoke(messages)
        except TRANSPORT_ERRORS as exc:
            reply = AIMessage(content=f"The model server did not answer ({type(exc).__name__}); try again or use the /commands.")
        return {"messages": [reply]}

    def route(state: ChatState, runtime: Runtime[ChatContext]) -> Literal["run_tools", "__end__"]:
        last = state["messages"][-1]
        if isinstance(last, AIMessage) and last.tool_calls:
            if state.get("tool_rounds", 0) >= runtime.context.max_tool_rounds:
                return END
            return "run_tools"
        return END

    tool_node = ToolNode(tools, handle_tool_errors=True)

    def run_tools(state: ChatState) -> dict:
        """Execute the read-only tools the model called and count the round."""
        update = tool_node.invoke({"messages": state["messages"]})
        return {"messages": update["messages"], "tool_rounds": state.get("tool_rounds", 0) + 1}

    builder = StateGraph(ChatState, context_schema=ChatContext)
    builder.add_node(answer_question)
    builder.add_node(run_tools)
    builder.add_edge(START, "answer_question")
    builder.add_conditional_edges("answer_question", route)
    builder.add_edge("run_tools", "answer_question")
    return builder.compile()


def final_answer(state: ChatState) -> str:
    """The text of the last model message (or an honest note when the round bound hit)."""
    last = state["messages"][-1]
    if isinstance(last, AIMessage) and last.tool_calls:
        return "I could not settle this within the tool-call budget; ask a narrower question."
    content = last.content
    return content if isinstance(content, str) else str(content)
